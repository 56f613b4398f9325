// Helpers for the serving end-to-end tests: child processes (bitfleet serve / coordinator /
// mpirun workers) with their logs in files, the ports a server chose (--ports-file), a gRPC client for Generate and
// grpc.health.v1, a minimal HTTP GET for /metrics, and in-process greedy decoding as the
// reference the served tokens must equal.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bitfleet/v1/inference.grpc.pb.h"
#include "core/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/channel.h"
#include "worker/token_logprobs.h"

namespace bitfleet::e2e {


// A child process in its own process group; stdout and stderr go to `log_path`. Killed (whole
// group, SIGKILL) on destruction if still running.
class Process {
 public:
  static StatusOr<std::unique_ptr<Process>> Start(const std::vector<std::string>& argv, const std::string& log_path);
  ~Process();
  pid_t pid() const { return pid_; }
  bool Exited();                 // reaps without blocking
  void Signal(int signal);       // to the process only
  void SignalGroup(int signal);  // to its whole process group
  // Waits up to `timeout`; the exit code (128 + signal when killed), or DEADLINE_EXCEEDED.
  StatusOr<int> Wait(std::chrono::milliseconds timeout);
  std::string Log() const;  // the log file's contents

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string log_path_;
};

// mpirun flags for tests on one box (root allowed, oversubscribed, loopback TCP).
std::vector<std::string> MpirunPrefix(int np);
// True when TP > 1 groups can be started: mpirun is installed and bitfleet was built with MPI.
bool HaveMpirun();
// The skip reason when they cannot.
inline constexpr char kNoMpiGroups[] = "no TP groups here: mpirun not installed or bitfleet built without MPI";

// Synthesizes a model with the bitfleet binary into `dir` (cached per arguments; safe when
// several test processes ask at once).
StatusOr<std::string> SynthModel(const std::string& dir, const std::string& arch, const std::string& preset,
                                 const std::string& type, int seed);
// A symlink to `model` named for this test process, so the worker processes serving it can be
// told apart from other tests' (WorkerPids).
StatusOr<std::string> PrivateCopy(const std::string& model, const std::string& name);

// Greedy decoding in this process, as `bitfleet run --temp 0` does: up to `n` tokens after
// `prompt`, with `stop_at_eog` stopping before an end-of-generation token.
StatusOr<std::vector<int32_t>> GreedyReference(const std::string& model, const std::vector<int32_t>& prompt, int n,
                                               bool stop_at_eog);
// The log probabilities (worker/token_logprobs.h) of `tokens` following `prompt`, with the
// `top_n` most likely tokens at each step, computed in this process.
StatusOr<std::vector<worker::TokenLogprobs>> ReferenceLogprobs(const std::string& model,
                                                               const std::vector<int32_t>& prompt,
                                                               const std::vector<int32_t>& tokens, int top_n);
// The model's tokenizer encoding of `text` (BOS as the vocabulary asks).
StatusOr<std::vector<int32_t>> Encode(const std::string& model, const std::string& text);

// What one Generate call produced.
struct GenerateOutcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string text;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  std::string request_id;
  int messages = 0;
};

class Client {
 public:
  explicit Client(const std::string& target);
  // One streaming Generate. `on_message` (optional) sees every message; returning false cancels
  // the call from the client side. `timeout` 0: no deadline.
  GenerateOutcome Generate(const v1::GenerateRequest& request, std::chrono::milliseconds timeout = {},
                           const std::function<bool(const v1::GenerateResponse&)>& on_message = nullptr);
  // grpc.health.v1 Check; UNKNOWN with the error when the call fails.
  grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& service = "",
                                                              grpc::Status* error = nullptr);
  // Polls Health("") until it equals `want` or `timeout` passes.
  bool WaitHealth(grpc::health::v1::HealthCheckResponse::ServingStatus want, std::chrono::milliseconds timeout);
  v1::Inference::Stub& stub() { return *stub_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// A greedy request for `prompt` token ids.
v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, uint32_t max_tokens, bool ignore_eos = true);

// GET http://127.0.0.1:`port``path` (HTTP/1.0); the body, or an error.
StatusOr<std::string> HttpGet(int port, const std::string& path);
// The value of the first sample line starting with `series` ("name" or "name{labels}") in
// Prometheus text, or NOT_FOUND.
StatusOr<double> MetricValue(const std::string& text, const std::string& series);

// The ports of a server started with port 0 flags and `--ports-file path`
// (tools/commands/ports_file.h); -1 for one that is off.
struct ServerPorts {
  int api = -1;
  int http = -1;
  int metrics = -1;
  int control = -1;
};
// Waits up to `timeout` for `path` to appear and parses it; INTERNAL with the server's log when
// `server` exits first or the time runs out.
StatusOr<ServerPorts> WaitForPortsFile(const std::string& path, Process& server, std::chrono::milliseconds timeout);

// Pids of the `bitfleet worker` processes whose command line contains `marker` (mpirun
// itself excluded).
std::vector<pid_t> WorkerPids(const std::string& marker);

// One `bitfleet serve` child, up and SERVING, with a client and its HTTP metrics port.
struct Served {
  std::unique_ptr<Process> process;
  std::unique_ptr<Client> client;
  std::string model;
  int port = 0;
  int metrics_port = 0;
  std::string ports_file;  // its --ports-file, removed when it exits
  std::string Metrics();  // the /metrics text ("" when unreachable)
};

// Starts `bitfleet serve` on `model` at TP `tp` (1 thread per rank, context 512, fast
// heartbeats, API and metrics on ports it chooses; `extra` flags appended) and waits up to 90 s
// for SERVING. NOT_FOUND when the binary or (for tp > 1) mpirun is missing: the caller skips.
// The log goes to the test temp dir as `log_name`.log.
StatusOr<std::unique_ptr<Served>> StartServe(const std::string& model, int tp, const std::string& log_name,
                                             const std::vector<std::string>& extra = {});

// Polls `condition` every 20 ms until true or `timeout`.
bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

}  // namespace bitfleet::e2e

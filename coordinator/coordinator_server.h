// The coordinator process, assembled (DESIGN.md §1, §7): the model's tokenizer and config (no
// weights), the Scheduler over one RemoteReplica per replica slot, and three listeners:
//   - the client API (gRPC): bitfleet.v1.Inference, grpc.health.v1.Health, server reflection;
//   - the control endpoint (gRPC, internal): bitfleet.v1.Control for the workers;
//   - optionally the OpenAI-compatible HTTP API (http_api.h);
//   - optionally the HTTP side port: Prometheus /metrics and /health.
// `bitfleet coordinator` runs it on its own; `bitfleet serve` runs it in-process beside the
// workers it launches, or (`serve --in-process`) with the replica's model in this process too.
//
// Health (grpc.health.v1): the overall service "" and "bitfleet.v1.Inference" are SERVING
// while at least one replica is healthy and the server is not draining; each replica slot also
// reports as "bitfleet.v1.Inference/replica-K".
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/api_auth.h"
#include "coordinator/draft_proposer.h"
#include "coordinator/executor.h"
#include "coordinator/grpc_executor.h"
#include "coordinator/request.h"
#include "coordinator/tls.h"
#include "core/status.h"

namespace bitfleet::coordinator {

struct CoordinatorServerOptions {
  std::string model;                        // GGUF file: tokenizer and config are read, no weights
  std::string listen = "0.0.0.0:50051";     // client API; port 0 picks a free port
  std::string control = "127.0.0.1:50052";  // worker control endpoint; port 0 picks a free port
  int metrics_port = -1;                    // HTTP /metrics and /health; -1: off, 0: any free port
  std::string metrics_host = "0.0.0.0";
  int http_port = -1;                       // OpenAI-compatible HTTP API; -1: off, 0: any free port
  std::string http_host = "0.0.0.0";
  // HTTP connections served at once; 0: HttpThreadsFor (every request the scheduler can hold).
  int http_threads = 0;
  std::shared_ptr<const ApiKeys> api_keys;  // keys of both client APIs (api_auth.h); null: none
  TlsFiles tls;                             // TLS of both client APIs; none set: plaintext
  int tensor_parallel = 1;
  int replicas = 1;
  int max_context = 0;            // 0: the model's training context
  int kv_block_size = 16;         // workers must use the same
  int max_queued_requests = 256;  // admission queue; beyond: RESOURCE_EXHAUSTED
  int max_step_tokens = 0;        // per-step token budget; 0: the workers' limit
  bool prefix_caching = true;
  DraftOptions speculative;       // speculative decoding by prompt lookup (max_tokens 0: off)
  int prompt_score_cache_mib = 64;  // SchedulerOptions::prompt_score_cache_bytes, in MiB
  // A Jinja chat template file used instead of the model's tokenizer.chat_template ("": the
  // model's). One that cannot be read or parsed fails Start; a model's own that cannot be parsed
  // only leaves chats refused, with the reason.
  std::string chat_template_file;
  ControlTiming timing;
};

// The HTTP API's threads when options.http_threads is 0: a request holds one while it runs, so
// enough for every request the scheduler can hold (the admission queue plus 64 running per
// replica, the workers' default --max-step-sequences), at most 4096. With fewer, requests past
// the threads waited unseen in cpp-httplib's queue instead of reaching the admission queue (and
// its 429 when full), and a second replica's sequences stayed idle.
int HttpThreadsFor(const CoordinatorServerOptions& options);

class CoordinatorServer {
 public:
  // Loads the tokenizer and config, binds every listener and starts serving (health
  // NOT_SERVING until a replica's workers have registered).
  //
  // With `in_process` executors (one per replica, TP 1: InProcessExecutor over a runner of the
  // same model file), the replicas run in this process: no control endpoint, no worker
  // processes, no registration; a step is a call on the replica's dispatch thread instead of a
  // plan and a result over the control stream. The server owns them. INVALID_ARGUMENT when
  // their count is not options.replicas, options.tensor_parallel is not 1, or one's KV block
  // size differs from options.kv_block_size.
  static StatusOr<std::unique_ptr<CoordinatorServer>> Start(const CoordinatorServerOptions& options,
                                                            std::vector<std::unique_ptr<Executor>> in_process = {});
  ~CoordinatorServer();  // Shutdown()

  int api_port() const;
  int control_port() const;  // 0 when the replicas run in this process
  int metrics_port() const;  // -1 when off
  int http_port() const;     // -1 when off
  const std::string& model_name() const;
  int32_t max_context() const;
  bool serving() const;
  int healthy_replicas() const;
  bool replica_healthy(int replica) const;
  // How many times all ranks of `replica` have registered (one per incarnation) so far.
  int replica_registrations(int replica) const;

  // Stops admitting (health NOT_SERVING; Generate answers UNAVAILABLE), lets in-flight requests
  // finish until `deadline` (those still running then end UNAVAILABLE), then asks the workers
  // to exit. OK when everything finished in time.
  Status Drain(Clock::time_point deadline);
  // From another thread while Drain waits: ends the drain now, as if its deadline had passed
  // (requests still running end UNAVAILABLE); Drain then returns DEADLINE_EXCEEDED.
  void EndDrainNow();
  // Stops the listeners and the scheduler. Idempotent.
  void Shutdown();

 private:
  struct State;
  explicit CoordinatorServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace bitfleet::coordinator

#include "tests/e2e/serving_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_split.h"
#include "cache/block_pool.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf.h"
#include "nlohmann/json.hpp"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "tests/e2e/engine_test_assets.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"
#include "worker/sequence_session.h"

extern char** environ;

namespace bitfleet::e2e {

using Clock = std::chrono::steady_clock;

StatusOr<std::unique_ptr<Process>> Process::Start(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&files, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  auto process = std::unique_ptr<Process>(new Process());
  process->log_path_ = log_path;
  const int error = posix_spawnp(&process->pid_, args[0], &files, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  if (error != 0) return absl::InternalError(absl::StrCat("cannot start ", argv[0], ": ", error));
  return process;
}

Process::~Process() {
  if (!Exited()) {
    SignalGroup(SIGKILL);
    Wait(std::chrono::seconds(10)).IgnoreError();
  }
}

bool Process::Exited() {
  if (exited_ || pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return exited_;
}

void Process::Signal(int signal) {
  if (!Exited()) kill(pid_, signal);
}

void Process::SignalGroup(int signal) {
  if (pid_ > 0) kill(-pid_, signal);
}

StatusOr<int> Process::Wait(std::chrono::milliseconds timeout) {
  if (!WaitUntil([this] { return Exited(); }, timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " still running"));
  }
  return exit_code_;
}

std::string Process::Log() const {
  std::ifstream in(log_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool HaveMpirun() {
#if defined(BITFLEET_HAVE_MPI)
  return system("command -v mpirun > /dev/null 2>&1") == 0;
#else
  return false;  // a bitfleet built without MPI runs every rank as a group of one
#endif
}

std::vector<std::string> MpirunPrefix(int np) {
  return {"mpirun", "-np", std::to_string(np), "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
          "--mca",  "btl", "self,vader,tcp",   "--mca",           "btl_tcp_if_include",  "lo"};
}

StatusOr<std::string> SynthModel(const std::string& dir, const std::string& arch, const std::string& preset,
                                 const std::string& type, int seed) {
  BF_ASSIGN_OR_RETURN(std::string bin, BitfleetBinary());
  const std::string path = absl::StrCat(dir, "/synth-", arch, "-", preset, "-", type, "-", seed, ".gguf");
  if (access(path.c_str(), R_OK) == 0) return path;
  // Written aside and renamed, so concurrent tests never read a half-written file.
  const std::string partial = absl::StrCat(path, ".", getpid(), ".partial");
  const CommandResult r =
      RunCommand(absl::StrCat(ShellQuote(bin), " synth --arch ", arch, " --preset ", preset, " --type ", type,
                              " --seed ", seed, " -o ", ShellQuote(partial), " 2>&1"));
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("synth failed: ", r.out));
  if (rename(partial.c_str(), path.c_str()) != 0) return absl::InternalError("rename failed");
  return path;
}

StatusOr<std::string> PrivateCopy(const std::string& model, const std::string& name) {
  std::string safe = name;
  for (char& ch : safe) {
    if (ch == '/') ch = '_';
  }
  const std::string link = absl::StrCat(::testing::TempDir(), "/", safe, "-", getpid(), ".gguf");
  unlink(link.c_str());
  if (symlink(model.c_str(), link.c_str()) != 0) return absl::InternalError(absl::StrCat("symlink ", link));
  // Removed when the test process exits (the name holds the pid, so no later run reuses it).
  struct Links {
    std::vector<std::string> paths;
    ~Links() {
      for (const std::string& p : paths) unlink(p.c_str());
    }
  };
  static Links links;
  links.paths.push_back(link);
  return link;
}

namespace {

struct LoadedReference {
  std::shared_ptr<const gguf::GgufFile> file;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
};

StatusOr<LoadedReference> OpenReference(const std::string& model) {
  LoadedReference loaded;
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(model));
  loaded.file = std::move(file);
  BF_ASSIGN_OR_RETURN(tokenizer::Vocab vocab, tokenizer::LoadVocabFromGguf(*loaded.file));
  BF_ASSIGN_OR_RETURN(loaded.tokenizer, tokenizer::Tokenizer::Create(std::move(vocab)));
  return loaded;
}

}  // namespace

StatusOr<std::vector<int32_t>> Encode(const std::string& model, const std::string& text) {
  BF_ASSIGN_OR_RETURN(LoadedReference loaded, OpenReference(model));
  return loaded.tokenizer->Encode(text);
}

namespace {

// Runs `model` in this process on one sequence: feeds `prompt`, then asks `next` with each
// step's logits for the token to feed (nullopt: stop).
using NextFn = std::function<std::optional<int32_t>(std::span<const float> logits, const tokenizer::Tokenizer&)>;
Status WalkReference(const std::string& model, const std::vector<int32_t>& prompt, const NextFn& next) {
  BF_ASSIGN_OR_RETURN(LoadedReference loaded, OpenReference(model));
  worker::RunnerOptions options;
  options.threads = 1;
  options.max_step_sequences = 1;
  options.max_logit_rows = 1;
  BF_ASSIGN_OR_RETURN(std::unique_ptr<worker::ModelRunner> runner, worker::ModelRunner::Create(loaded.file, options));
  cache::BlockPool pool(runner->kv_blocks());
  worker::SequenceSession session(*runner, pool);
  BF_ASSIGN_OR_RETURN(std::span<const float> logits, session.Append(prompt));
  while (true) {
    const std::optional<int32_t> token = next(logits, *loaded.tokenizer);
    if (!token) return absl::OkStatus();
    BF_ASSIGN_OR_RETURN(logits, session.Append(std::span<const int32_t>(&*token, 1)));
  }
}

}  // namespace

StatusOr<std::vector<int32_t>> GreedyReference(const std::string& model, const std::vector<int32_t>& prompt, int n,
                                               bool stop_at_eog) {
  std::optional<worker::Sampler> sampler;
  worker::SamplingParams greedy;
  greedy.temperature = 0;
  worker::Rng rng(0);
  std::vector<int32_t> out;
  BF_RETURN_IF_ERROR(WalkReference(model, prompt, [&](std::span<const float> logits, const tokenizer::Tokenizer& t)
                                                      -> std::optional<int32_t> {
    if (static_cast<int>(out.size()) == n) return std::nullopt;
    if (!sampler) sampler.emplace(static_cast<int32_t>(logits.size()));
    const int32_t token = sampler->Sample(logits, {}, greedy, rng);
    if (stop_at_eog && t.IsEndOfGeneration(token)) return std::nullopt;
    out.push_back(token);
    if (static_cast<int>(out.size()) == n) return std::nullopt;
    return token;
  }));
  return out;
}

StatusOr<std::vector<worker::TokenLogprobs>> ReferenceLogprobs(const std::string& model,
                                                               const std::vector<int32_t>& prompt,
                                                               const std::vector<int32_t>& tokens, int top_n) {
  std::vector<worker::TokenLogprobs> out;
  BF_RETURN_IF_ERROR(WalkReference(model, prompt, [&](std::span<const float> logits, const tokenizer::Tokenizer&)
                                                      -> std::optional<int32_t> {
    if (out.size() == tokens.size()) return std::nullopt;
    out.push_back(worker::ComputeLogprobs(logits, tokens[out.size()], top_n));
    return out.size() < tokens.size() ? std::optional<int32_t>(tokens[out.size() - 1]) : std::nullopt;
  }));
  return out;
}

namespace {

// The servers under test start while the client already polls: retry connecting every 100 ms,
// not on gRPC's default backoff (1 s, growing).
grpc::ChannelArguments QuickReconnect() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return args;
}

}  // namespace

Client::Client(const std::string& target)
    : channel_(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), QuickReconnect())),
      stub_(v1::Inference::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

GenerateOutcome Client::Generate(const v1::GenerateRequest& request, std::chrono::milliseconds timeout,
                                 const std::function<bool(const v1::GenerateResponse&)>& on_message) {
  GenerateOutcome outcome;
  grpc::ClientContext context;
  if (timeout.count() > 0) context.set_deadline(std::chrono::system_clock::now() + timeout);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse message;
  bool cancelled = false;
  while (reader->Read(&message)) {
    ++outcome.messages;
    if (!message.request_id().empty()) outcome.request_id = message.request_id();
    outcome.tokens.insert(outcome.tokens.end(), message.token_ids().begin(), message.token_ids().end());
    outcome.text += message.text();
    if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      outcome.finish = message.finish_reason();
      outcome.usage = message.usage();
    }
    if (!cancelled && on_message && !on_message(message)) {
      context.TryCancel();
      cancelled = true;
    }
  }
  outcome.status = reader->Finish();
  return outcome;
}

grpc::health::v1::HealthCheckResponse::ServingStatus Client::Health(const std::string& service, grpc::Status* error) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = health_->Check(&context, request, &response);
  if (error != nullptr) *error = status;
  return status.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
}

bool Client::WaitHealth(grpc::health::v1::HealthCheckResponse::ServingStatus want, std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return Health() == want; }, timeout);
}

v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, uint32_t max_tokens, bool ignore_eos) {
  v1::GenerateRequest request;
  request.mutable_prompt_tokens()->mutable_ids()->Add(prompt.begin(), prompt.end());
  request.set_max_tokens(max_tokens);
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_ignore_eos(ignore_eos);
  return request;
}

StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to port ", port));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("write failed");
  }
  std::string response;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, static_cast<size_t>(n));
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return absl::UnavailableError("malformed HTTP response");
  return response.substr(body + 4);
}

StatusOr<double> MetricValue(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (line.substr(0, series.size()) != series) continue;
    const absl::string_view rest = line.substr(series.size());
    if (rest.empty() || rest[0] != ' ') continue;
    return std::strtod(std::string(rest.substr(1)).c_str(), nullptr);
  }
  return absl::NotFoundError(absl::StrCat("no series ", series));
}

std::vector<pid_t> WorkerPids(const std::string& marker) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* entry = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (pid <= 0) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"), std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> args = absl::StrSplit(cmdline, '\0', absl::SkipEmpty());
    if (args.size() < 2 || args[1] != "worker") continue;
    for (const std::string& a : args) {
      if (a == marker) {
        pids.push_back(pid);
        break;
      }
    }
  }
  closedir(proc);
  return pids;
}

std::string Served::Metrics() {
  auto text = HttpGet(metrics_port, "/metrics");
  return text.ok() ? *text : std::string();
}

StatusOr<ServerPorts> WaitForPortsFile(const std::string& path, Process& server, std::chrono::milliseconds timeout) {
  const auto exists = [&] { return std::ifstream(path).good(); };
  if (!WaitUntil([&] { return server.Exited() || exists(); }, timeout) || !exists()) {
    return absl::InternalError(absl::StrCat("the server wrote no ", path, "; its log:\n", server.Log()));
  }
  std::ifstream in(path);
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  const auto port = [&](const char* name) {
    return json.contains(name) && json[name].is_number_integer() ? json[name].get<int>() : -1;
  };
  ServerPorts ports{port("api"), port("http"), port("metrics"), port("control")};
  if (ports.api <= 0) return absl::InternalError(absl::StrCat(path, " names no API port: ", json.dump()));
  return ports;
}

StatusOr<std::unique_ptr<Served>> StartServe(const std::string& model, int tp, const std::string& log_name,
                                             const std::vector<std::string>& extra) {
  BF_ASSIGN_OR_RETURN(std::string bin, BitfleetBinary());
  if (tp > 1 && !HaveMpirun()) return absl::NotFoundError(kNoMpiGroups);
  auto served = std::make_unique<Served>();
  served->model = model;
  const std::string ports_file = ::testing::TempDir() + "/" + log_name + ".ports.json";
  std::remove(ports_file.c_str());
  std::vector<std::string> argv = {bin,
                                   "serve",
                                   "--model",
                                   model,
                                   "--tp",
                                   std::to_string(tp),
                                   "--port",
                                   "0",
                                   "--metrics-port",
                                   "0",
                                   "--ports-file",
                                   ports_file,
                                   "--threads",
                                   "1",
                                   "--ctx",
                                   "512",
                                   "--heartbeat-ms",
                                   "100",
                                   "--heartbeat-timeout-ms",
                                   "3000",
                                   "--mpirun-args",
                                   "--bind-to none --mca btl self,vader,tcp --mca btl_tcp_if_include lo"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  BF_ASSIGN_OR_RETURN(served->process, Process::Start(argv, ::testing::TempDir() + "/" + log_name + ".log"));
  // Connect only once the port listens (the file comes after the bind): a gRPC channel whose
  // first attempts were refused can stay in a failed handshake for seconds (seen with gRPC 1.51).
  BF_ASSIGN_OR_RETURN(const ServerPorts ports,
                      WaitForPortsFile(ports_file, *served->process, std::chrono::seconds(90)));
  served->port = ports.api;
  served->metrics_port = ports.metrics;
  served->ports_file = ports_file;
  served->client = std::make_unique<Client>("ipv4:127.0.0.1:" + std::to_string(served->port));
  const bool up = WaitUntil(
      [&] {
        return served->process->Exited() || served->client->Health() == grpc::health::v1::HealthCheckResponse::SERVING;
      },
      std::chrono::seconds(90));
  if (!up || served->process->Exited()) {
    return absl::InternalError(absl::StrCat("serve did not come up; its log:\n", served->process->Log()));
  }
  return served;
}

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace bitfleet::e2e

#include "coordinator/coordinator_server.h"

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "coordinator/api_service.h"
#include "coordinator/control_service.h"
#include "coordinator/health_service.h"
#include "coordinator/http_api.h"
#include "coordinator/http_metrics.h"
#include "coordinator/metrics.h"
#include "coordinator/scheduler.h"
#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "core/read_file.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {
namespace {

constexpr char kInferenceService[] = "bitfleet.v1.Inference";
// Generate prompts are bounded by ApiLimits::max_prompt_bytes (1 MiB); leave room for the rest.
constexpr int kMaxReceiveBytes = 4 << 20;
// Once the scheduler has stopped, every Generate call is writing its last message: they need
// moments, not seconds (gRPC may otherwise hold an idle client's connection to the deadline).
// How often health is recomputed from the scheduler (its idle loop polls replicas every 20 ms).
constexpr auto kHealthRefresh = std::chrono::milliseconds(50);
constexpr auto kShutdownGrace = std::chrono::milliseconds(500);

std::string ReplicaHealthName(int replica) { return absl::StrCat(kInferenceService, "/replica-", replica); }

// Sets limits->chat (or limits->chat_unavailable) from the operator's template file, else the
// model's template. Errors only for the operator's file: a model's own template that cannot be
// used leaves the prompt inputs served and chats refused with the reason.
Status SetUpChat(const std::string& file, const std::string& model_template, const tokenizer::Tokenizer& tokenizer,
                 ApiLimits* limits) {
  auto log = Logger("coordinator");
  std::string text = model_template;
  if (!file.empty()) {
    BF_ASSIGN_OR_RETURN(text, ReadFileToString(file));
    auto prompt = ChatPrompt::Create(text, tokenizer);
    if (!prompt.ok()) return Status(prompt.status().code(), absl::StrCat(file, ": ", prompt.status().message()));
    limits->chat = std::move(*prompt);
    log->info("chat template: {} ({} bytes)", file, text.size());
    return absl::OkStatus();
  }
  if (text.empty()) {
    limits->chat_unavailable =
        "the served model has no chat template (tokenizer.chat_template): send a prompt, or serve it with "
        "--chat-template FILE";
    log->warn("the model has no chat template: chat requests will be refused (serve with --chat-template FILE)");
    return absl::OkStatus();
  }
  auto prompt = ChatPrompt::Create(text, tokenizer);
  if (!prompt.ok()) {
    limits->chat_unavailable =
        absl::StrCat("the served model's chat template cannot be used (", prompt.status().message(),
                     "): send a prompt, or serve it with --chat-template FILE");
    log->warn("chat requests will be refused: the model's {}", std::string(prompt.status().message()));
    return absl::OkStatus();
  }
  limits->chat = std::move(*prompt);
  log->info("chat template: the model's ({} bytes)", text.size());
  return absl::OkStatus();
}

}  // namespace

struct CoordinatorServer::State final : public ReplicaObserver {
  CoordinatorServerOptions options;
  std::string model_name;
  std::string chat_template;  // the model's tokenizer.chat_template ("" when it has none)
  model::ModelConfig config;
  int32_t max_context = 0;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  MetricsRegistry metrics;
  // Replicas in this process (serve --in-process); destroyed after the scheduler that calls them.
  std::vector<std::unique_ptr<Executor>> in_process;
  std::unique_ptr<ControlService> control;  // null when the replicas run in this process
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<ApiService> api;
  std::unique_ptr<HealthService> health;  // declared first: outlives the server that serves it
  std::unique_ptr<grpc::Server> api_server;
  std::unique_ptr<grpc::Server> control_server;
  std::unique_ptr<HttpMetricsServer> http;
  std::unique_ptr<HttpApiServer> http_api;  // OpenAI-compatible; null when off
  int api_port = 0;
  int control_port = 0;
  std::atomic<bool> draining{false};
  std::mutex shutdown_mu;
  bool shut_down = false;

  // Health follows the scheduler's view of its replicas (what Submit decides with), so a
  // client that sees SERVING is never refused for want of a replica.
  bool Serving() const { return !draining.load() && scheduler != nullptr && scheduler->serving(); }
  bool ReplicaServing(int replica) const {
    return !draining.load() && scheduler != nullptr && scheduler->replica_healthy(replica);
  }
  int ServingReplicas() const {
    int n = 0;
    for (int r = 0; r < options.replicas; ++r) n += ReplicaServing(r);
    return n;
  }

  // Publishes the health of every replica and of the whole server.
  void UpdateHealth() {
    if (health == nullptr) return;
    const bool serving = Serving();
    health->Set("", serving);
    health->Set(kInferenceService, serving);
    for (int r = 0; r < options.replicas; ++r) health->Set(ReplicaHealthName(r), ReplicaServing(r));
  }

  // Refreshes health every kHealthRefresh and whenever a replica comes or goes.
  void HealthLoop() {
    std::unique_lock lock(health_mu);
    while (!health_stop) {
      lock.unlock();
      UpdateHealth();
      lock.lock();
      health_cv.wait_for(lock, kHealthRefresh, [this] { return health_stop || health_wake; });
      health_wake = false;
    }
  }
  void WakeHealth() {
    {
      std::lock_guard lock(health_mu);
      health_wake = true;
    }
    health_cv.notify_all();
  }
  void StopHealth() {
    {
      std::lock_guard lock(health_mu);
      health_stop = true;
    }
    health_cv.notify_all();
    if (health_thread.joinable()) health_thread.join();
  }

  // Stops everything that runs, in dependency order. Idempotent; also run on a failed Start.
  void Shutdown() {
    std::lock_guard lock(shutdown_mu);
    if (shut_down) return;
    shut_down = true;
    draining.store(true);
    StopHealth();
    UpdateHealth();
    if (health) health->Shutdown();  // NOT_SERVING for good; ends the Watch streams
    if (http) http->Stop();
    // The scheduler first: it finishes every request, which lets the Generate handlers (gRPC
    // and HTTP) return.
    if (scheduler) scheduler->Stop();
    if (http_api) http_api->Stop();
    const auto grace = std::chrono::system_clock::now() + kShutdownGrace;
    if (api_server) api_server->Shutdown(grace);
    if (control) control->Stop();
    if (control_server) control_server->Shutdown(grace);  // cancels the workers' streams that remain
    if (api_server) api_server->Wait();
    if (control_server) control_server->Wait();
  }
  ~State() override { Shutdown(); }

  // The scheduler notices a replica change on its next poll; look again shortly after.
  void OnReplicaReady(int replica) override {
    if (replica >= 0 && replica < static_cast<int>(registrations.size())) registrations[replica].fetch_add(1);
    WakeHealth();
  }
  void OnReplicaDown(int, const Status&) override { WakeHealth(); }

  std::vector<std::atomic<int>> registrations;  // per replica: incarnations that became ready

  std::mutex health_mu;
  std::condition_variable health_cv;
  bool health_stop = false;
  bool health_wake = false;
  std::thread health_thread;
};

CoordinatorServer::CoordinatorServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

int HttpThreadsFor(const CoordinatorServerOptions& options) {
  constexpr int kStepSequencesPerReplica = 64;
  const int64_t threads =
      static_cast<int64_t>(options.max_queued_requests) + int64_t{kStepSequencesPerReplica} * options.replicas;
  return static_cast<int>(std::clamp<int64_t>(threads, 1, 4096));
}

StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorServerOptions& options, std::vector<std::unique_ptr<Executor>> in_process) {
  auto log = Logger("coordinator");
  if (options.tensor_parallel < 1 || options.replicas < 1) {
    return absl::InvalidArgumentError("--tp and --replicas must be >= 1");
  }
  if (!in_process.empty()) {
    if (options.tensor_parallel != 1 || static_cast<int>(in_process.size()) != options.replicas) {
      return absl::InvalidArgumentError(absl::StrCat("replicas in this process run at TP 1, one executor each: got ",
                                                     in_process.size(), " for ", options.replicas, " replica(s) x TP ",
                                                     options.tensor_parallel));
    }
    for (const std::unique_ptr<Executor>& executor : in_process) {
      if (executor == nullptr || executor->kv_block_size() != options.kv_block_size) {
        return absl::InvalidArgumentError(absl::StrCat("an in-process replica's KV block size is not ",
                                                       options.kv_block_size));
      }
    }
  }
  BF_RETURN_IF_ERROR(CheckTlsFiles(options.tls));
  auto state = std::make_unique<State>();
  state->options = options;
  state->registrations = std::vector<std::atomic<int>>(options.replicas);

  // Tokenizer and config only: the mapping is dropped once they are read.
  v1::ModelIdentity identity;
  {
    BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(options.model));
    BF_ASSIGN_OR_RETURN(state->config, model::ReadModelConfig(*file));
    BF_ASSIGN_OR_RETURN(tokenizer::Vocab vocab, tokenizer::LoadVocabFromGguf(*file));
    BF_ASSIGN_OR_RETURN(state->tokenizer, tokenizer::Tokenizer::Create(std::move(vocab)));
    identity = ModelIdentityOf(state->config, file->file_size());
    auto chat_template = file->GetString("tokenizer.chat_template");
    if (chat_template.ok()) state->chat_template = *chat_template;
  }
  state->model_name =
      !state->config.name.empty() ? state->config.name : std::filesystem::path(options.model).stem().string();
  const int32_t trained = static_cast<int32_t>(state->config.n_ctx_train);
  state->max_context = options.max_context > 0 ? std::min(options.max_context, trained) : trained;

  std::vector<Executor*> executors;
  if (in_process.empty()) {
    ControlServiceOptions control;
    control.replicas = options.replicas;
    control.tensor_parallel = options.tensor_parallel;
    control.model = identity;
    control.required.kv_block_size = options.kv_block_size;
    control.required.max_context = state->max_context;
    control.timing = options.timing;
    state->control = std::make_unique<ControlService>(control, state.get());
    executors = state->control->executors();
  } else {
    state->in_process = std::move(in_process);
    for (int r = 0; r < options.replicas; ++r) {
      executors.push_back(state->in_process[r].get());
      state->registrations[r].store(1);  // ready from the start: nothing registers
    }
  }

  ApiLimits limits;
  BF_RETURN_IF_ERROR(SetUpChat(options.chat_template_file, state->chat_template, *state->tokenizer, &limits));
  // Generation ends at the vocabulary's end-of-generation tokens and at the one the chat
  // template ends an assistant's turn with.
  std::vector<int32_t> end_of_generation = state->tokenizer->end_of_generation();
  if (limits.chat != nullptr) {
    for (int32_t id : limits.chat->turn_end_tokens()) {
      if (std::find(end_of_generation.begin(), end_of_generation.end(), id) != end_of_generation.end()) continue;
      end_of_generation.push_back(id);
      log->info("the chat template ends a turn with {} (id {}): it ends generation too",
                state->tokenizer->vocab().tokens[static_cast<size_t>(id)], id);
    }
  }
  std::sort(end_of_generation.begin(), end_of_generation.end());

  SchedulerOptions sched;
  sched.model_id = absl::StrCat(state->model_name, "/", identity.file_bytes());
  sched.n_vocab = static_cast<int32_t>(state->config.n_vocab);
  sched.max_context = state->max_context;
  sched.kv_block_size = options.kv_block_size;
  sched.end_of_generation = end_of_generation;
  sched.max_queued_requests = options.max_queued_requests;
  sched.max_step_tokens = options.max_step_tokens;
  sched.prefix_caching = options.prefix_caching;
  sched.speculative = options.speculative;
  sched.prompt_score_cache_bytes = int64_t{options.prompt_score_cache_mib} << 20;
  sched.metrics = &state->metrics;
  BF_ASSIGN_OR_RETURN(state->scheduler, Scheduler::Create(sched, executors));
  state->scheduler->Start();

  const std::shared_ptr<const ApiKeys>& keys = options.api_keys;
  if (keys != nullptr) {
    log->info("API keys: {} key(s) of {} tenant(s); every client call needs one", keys->key_count(),
              keys->tenant_count());
  }
  ApiServiceOptions api;
  api.keys = keys;
  api.limits = std::move(limits);
  api.end_of_generation = end_of_generation;
  api.limits.model_name = state->model_name;
  api.limits.n_vocab = static_cast<int32_t>(state->config.n_vocab);
  api.limits.max_context = state->max_context;
  api.limits.json_grammars = std::make_shared<JsonGrammars>(state->tokenizer.get(), &state->metrics);
  api.architecture = state->config.arch_name;
  api.tensor_parallel = options.tensor_parallel;
  api.replicas = options.replicas;
  State* raw = state.get();
  state->api = std::make_unique<ApiService>(api, *state->tokenizer, *state->scheduler, state->metrics,
                                            [raw] { return raw->ServingReplicas(); });

  // Health is this process's own service (health_service.h): every name NOT_SERVING before the
  // port listens. gRPC's default one would answer SERVING until first set, and must not be
  // registered beside it.
  grpc::EnableDefaultHealthCheckService(false);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  {
    std::vector<std::string> health_names = {"", kInferenceService};
    for (int r = 0; r < options.replicas; ++r) health_names.push_back(ReplicaHealthName(r));
    state->health = std::make_unique<HealthService>(health_names);
    grpc::ServerBuilder builder;
    BF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, GrpcServerCredentials(options.tls));
    builder.AddListeningPort(options.listen, credentials, &state->api_port);
    // No SO_REUSEPORT (gRPC's Linux default): a second server on a taken port would silently
    // get a share of its connections instead of failing to start.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.SetMaxReceiveMessageSize(kMaxReceiveBytes);
    builder.RegisterService(state->api.get());
    builder.RegisterService(state->health.get());
    state->api_server = builder.BuildAndStart();
    if (state->api_server == nullptr || state->api_port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen, " (client API)"));
    }
    state->UpdateHealth();
  }
  if (state->control != nullptr) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options.control, grpc::InsecureServerCredentials(), &state->control_port);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(state->control.get());
    state->control_server = builder.BuildAndStart();
    if (state->control_server == nullptr || state->control_port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.control, " (worker control)"));
    }
    state->control->Start();
  }
  state->health_thread = std::thread([raw] { raw->HealthLoop(); });
  if (options.metrics_port >= 0) {
    BF_ASSIGN_OR_RETURN(
        state->http, HttpMetricsServer::Start(
                         options.metrics_host, options.metrics_port, [raw] { return raw->metrics.RenderPrometheus(); },
                         [raw] { return raw->Serving(); }));
  }
  if (options.http_port >= 0) {
    HttpApiOptions http;
    http.limits = api.limits;
    http.threads = options.http_threads > 0 ? options.http_threads : HttpThreadsFor(options);
    http.keys = keys;
    http.tls = options.tls;
    BF_ASSIGN_OR_RETURN(state->http_api,
                        HttpApiServer::Start(options.http_host, options.http_port, std::move(http), *state->tokenizer,
                                             *state->scheduler, state->metrics, [raw] { return raw->Serving(); }));
  }
  const std::string replicas_at = state->control != nullptr
                                      ? absl::StrCat("worker control on port ", state->control_port)
                                      : std::string("the replicas run in this process");
  log->info("serving {} ({}, context {}, vocab {}): API on port {}, {}, {} replica(s) x TP {}", state->model_name,
            state->config.arch_name, state->max_context, state->config.n_vocab, state->api_port, replicas_at,
            options.replicas, options.tensor_parallel);
  return std::unique_ptr<CoordinatorServer>(new CoordinatorServer(std::move(state)));
}

int CoordinatorServer::api_port() const { return state_->api_port; }
int CoordinatorServer::control_port() const { return state_->control_port; }
int CoordinatorServer::metrics_port() const { return state_->http ? state_->http->port() : -1; }
int CoordinatorServer::http_port() const { return state_->http_api ? state_->http_api->port() : -1; }
const std::string& CoordinatorServer::model_name() const { return state_->model_name; }
int32_t CoordinatorServer::max_context() const { return state_->max_context; }
bool CoordinatorServer::serving() const { return state_->Serving(); }
int CoordinatorServer::healthy_replicas() const { return state_->ServingReplicas(); }
bool CoordinatorServer::replica_healthy(int replica) const { return state_->ReplicaServing(replica); }
int CoordinatorServer::replica_registrations(int replica) const {
  if (replica < 0 || replica >= static_cast<int>(state_->registrations.size())) return 0;
  return state_->registrations[replica].load();
}

Status CoordinatorServer::Drain(Clock::time_point deadline) {
  auto log = Logger("coordinator");
  state_->draining.store(true);
  state_->UpdateHealth();
  log->info("draining: no new requests; waiting for in-flight requests");
  const Status drained = state_->scheduler->Drain(deadline);
  if (drained.ok()) {
    log->info("drained: every request finished");
  } else {
    log->warn("drain deadline passed: {}", std::string(drained.message()));
  }
  if (state_->control != nullptr) state_->control->ShutdownWorkers("the coordinator is shutting down");
  return drained;
}

void CoordinatorServer::EndDrainNow() {
  // The scheduler's Drain may run on several threads at once: an expired deadline aborts what
  // is left and wakes every waiter.
  state_->scheduler->Drain(Clock::now()).IgnoreError();
}

void CoordinatorServer::Shutdown() { state_->Shutdown(); }

}  // namespace bitfleet::coordinator

#include "worker/worker_process.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

#include "cache/kv_storage.h"
#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"
#include "sharding/communicator.h"
#include "worker/control_client.h"
#include "worker/nccl_bootstrap.h"
#include "worker/runner_factory.h"
#include "worker/step_executor.h"
#if defined(BITFLEET_HAVE_MPI)
#include "sharding/mpi_communicator.h"
#endif
#if defined(BITFLEET_HAVE_NCCL)
#include "sharding/nccl_communicator.h"
#endif

namespace bitfleet::worker {
namespace {

// Default KV pool: room for four full-context sequences, capped at 16384 tokens (but never
// less than one full context), so long-context models do not reserve gigabytes by default.
constexpr int kDefaultContextsInPool = 4;
constexpr int kDefaultPoolTokenCap = 16384;

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

}  // namespace

struct WorkerProcess::State {
  std::unique_ptr<sharding::Communicator> bootstrap;     // MPI under an NCCL communicator (kept alive)
  std::unique_ptr<sharding::Communicator> communicator;  // null: a group of one
  std::shared_ptr<const gguf::GgufFile> file;
  std::unique_ptr<StepRunner> runner;
  std::unique_ptr<StepExecutor> executor;
  std::unique_ptr<ControlClient> client;
  int rank = 0;
  int world_size = 1;
};

namespace {

// Replaces the state's communicator with an NCCL one: bootstrapped over MPI when mpirun started
// the group (the MPI communicator stays as `bootstrap`), else through the coordinator's
// ExchangeNcclId (rank 0 makes the id; the others receive it).
Status JoinNcclGroup(const WorkerOptions& o, int rank, int world_size,
                     std::unique_ptr<sharding::Communicator>& communicator,
                     std::unique_ptr<sharding::Communicator>& bootstrap) {
#if defined(BITFLEET_HAVE_NCCL)
  auto log = Logger("worker");
  if (communicator != nullptr) {
    BF_ASSIGN_OR_RETURN(std::unique_ptr<sharding::NcclCommunicator> nccl,
                        sharding::NcclCommunicator::CreateOver(*communicator, -1, o.collective_timeout));
    bootstrap = std::move(communicator);
    communicator = std::move(nccl);
  } else {
    NcclIdExchange exchange;
    exchange.coordinator = o.coordinator;
    exchange.replica = o.replica;
    exchange.rank = rank;
    exchange.world_size = world_size;
    exchange.timeout = o.connect_timeout;
    if (rank == 0) {
      BF_ASSIGN_OR_RETURN(exchange.unique_id, sharding::NewNcclUniqueId());
    }
    sharding::NcclOptions options;
    options.rank = rank;
    options.size = world_size;
    options.timeout = o.collective_timeout;
    if (world_size == 1) {
      options.unique_id = exchange.unique_id;  // nobody to tell
    } else {
      BF_ASSIGN_OR_RETURN(options.unique_id, ExchangeNcclId(exchange));
    }
    BF_ASSIGN_OR_RETURN(communicator, sharding::NcclCommunicator::Create(options));
  }
  log->info("rank {}/{}: NCCL communicator ready", rank, world_size);
  return absl::OkStatus();
#else
  (void)o, (void)rank, (void)world_size, (void)communicator, (void)bootstrap;
  return absl::FailedPreconditionError("--comm nccl: this build has no NCCL (configure with CUDA and NCCL found)");
#endif
}

}  // namespace

bool NcclBuilt() {
#if defined(BITFLEET_HAVE_NCCL)
  return true;
#else
  return false;
#endif
}

StatusOr<RunnerOptions> ResolveRunnerOptions(const WorkerOptions& o, const gguf::GgufFile& file) {
  RunnerOptions runner_options;
  runner_options.threads = std::max(1, o.threads);
  runner_options.max_context = o.max_context;
  runner_options.kv_block_size = o.kv_block_size;
  runner_options.kv_type = o.kv_type;
  runner_options.max_step_tokens = o.max_step_tokens;
  runner_options.max_step_sequences = o.max_step_sequences;
  runner_options.max_logit_rows = std::max(o.max_step_sequences, o.max_logit_rows);
  runner_options.device = o.device;
  if (o.kv_cache_mib < 0) return absl::InvalidArgumentError("--kv-cache-mib must be >= 0");
  if (o.kv_cache_mib > 0 && o.device == RunnerDevice::kCuda) {
    return absl::InvalidArgumentError(
        "--kv-cache-mib sizes a CPU runner's KV pool; with --device cuda, --gpu-memory-utilization (or --kv-blocks) "
        "does");
  }
  if (o.kv_blocks > 0) {
    runner_options.kv_blocks = o.kv_blocks;
  } else if (o.kv_cache_mib > 0) {
    runner_options.kv_blocks = 0;  // as many blocks as the budget holds (ModelRunner)
    runner_options.kv_cache_bytes = int64_t{o.kv_cache_mib} << 20;
  } else if (o.device == RunnerDevice::kCuda) {
    // The device's memory decides: the pool takes what the weights and buffers leave.
    runner_options.kv_blocks = 0;
    runner_options.gpu_memory_utilization = o.gpu_memory_utilization;
  } else {
    // The pool size needs the resolved context (max_context 0 means the training context).
    BF_ASSIGN_OR_RETURN(model::ModelConfig config, model::ReadModelConfig(file));
    const int context = o.max_context > 0 ? o.max_context : static_cast<int>(config.n_ctx_train);
    const int block_size = std::max(1, o.kv_block_size);
    const int blocks_per_context = (context + block_size - 1) / block_size;
    const int capped = std::min(kDefaultContextsInPool * blocks_per_context, kDefaultPoolTokenCap / block_size);
    runner_options.kv_blocks = std::max(blocks_per_context, capped);
  }
  return runner_options;
}

WorkerProcess::WorkerProcess(std::unique_ptr<State> state) : state_(std::move(state)) {}
WorkerProcess::~WorkerProcess() = default;

int WorkerProcess::rank() const { return state_->rank; }
int WorkerProcess::world_size() const { return state_->world_size; }

StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Create(const WorkerOptions& o) {
  StatusOr<std::unique_ptr<WorkerProcess>> process = CreateRank(o);
#if defined(BITFLEET_HAVE_MPI)
  // A rank that cannot start (its model missing on this node, memory short) leaves its group
  // behind: MPI_Finalize at exit would wait for peers that wait for it. Leave as after a broken
  // collective; mpirun then ends the job.
  if (!process.ok() && sharding::LaunchedUnderMpi()) sharding::MarkMpiGroupBroken();
#endif
  return process;
}

StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::CreateRank(const WorkerOptions& o) {
  if (o.coordinator.empty()) return absl::InvalidArgumentError("--coordinator is required");
  if (o.replica < 0) return absl::InvalidArgumentError(absl::StrCat("--replica must be >= 0, got ", o.replica));
  if (o.comm != "auto" && o.comm != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("--comm must be auto or nccl, got \"", o.comm, "\""));
  }
  auto state = std::make_unique<State>();
#if defined(BITFLEET_HAVE_MPI)
  if (sharding::LaunchedUnderMpi()) {
    BF_ASSIGN_OR_RETURN(std::unique_ptr<sharding::MpiCommunicator> mpi,
                        sharding::MpiCommunicator::Create(o.collective_timeout));
    state->rank = mpi->rank();
    state->world_size = mpi->size();
    state->communicator = std::move(mpi);
    if ((o.rank >= 0 && o.rank != state->rank) || (o.world_size >= 0 && o.world_size != state->world_size)) {
      return absl::InvalidArgumentError(absl::StrCat("--rank ", o.rank, " --world-size ", o.world_size,
                                                     " disagree with mpirun's rank ", state->rank, " of ",
                                                     state->world_size));
    }
  }
#endif
  if (state->communicator == nullptr) {
    state->rank = o.rank >= 0 ? o.rank : 0;
    state->world_size = o.world_size >= 0 ? o.world_size : 1;
    if (state->world_size < 1 || state->rank >= state->world_size) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", state->rank, " outside a group of ", state->world_size));
    }
    if (state->world_size > 1 && o.comm != "nccl") {
      return absl::FailedPreconditionError(
          absl::StrCat("a tensor-parallel group of ", state->world_size,
                       " needs a communicator: start the ranks with mpirun (e.g. mpirun -np ", state->world_size,
                       " bitfleet worker ...)"));
    }
  }

  if (o.comm == "nccl") {
    BF_RETURN_IF_ERROR(JoinNcclGroup(o, state->rank, state->world_size, state->communicator, state->bootstrap));
  }

  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(o.model));
  state->file = std::move(file);
  BF_ASSIGN_OR_RETURN(RunnerOptions runner_options, ResolveRunnerOptions(o, *state->file));
  runner_options.communicator = state->communicator.get();
  BF_ASSIGN_OR_RETURN(state->runner, CreateRunner(state->file, runner_options));
  state->executor = std::make_unique<StepExecutor>(*state->runner);

  const RunnerOptions& resolved = state->runner->options();
  ControlClientOptions client;
  client.coordinator = o.coordinator;
  client.connect_timeout = o.connect_timeout;
  client.on_stuck_step = o.on_stuck_step;
  v1::Register& r = client.registration;
  *r.mutable_model() = coordinator::ModelIdentityOf(state->runner->config(), state->file->file_size());
  r.set_replica(o.replica);
  r.set_rank(state->rank);
  r.set_world_size(state->world_size);
  v1::Capacity* capacity = r.mutable_capacity();
  capacity->set_kv_blocks(state->runner->kv_blocks());
  capacity->set_kv_block_size(state->runner->kv_block_size());
  capacity->set_max_step_tokens(resolved.max_step_tokens);
  capacity->set_max_step_sequences(std::min(resolved.max_step_sequences, resolved.max_logit_rows));
  capacity->set_max_context(resolved.max_context);
  capacity->set_max_logit_rows(resolved.max_logit_rows);
  capacity->set_max_draft_tokens(coordinator::kMaxDraftTokens);
  r.set_host(HostName());
  r.set_pid(static_cast<int32_t>(getpid()));
  r.set_kernel_variant(state->runner->kernel_variant());
  state->client = std::make_unique<ControlClient>(std::move(client));
  return std::unique_ptr<WorkerProcess>(new WorkerProcess(std::move(state)));
}

Status WorkerProcess::Run() {
  StepExecutor& executor = *state_->executor;
  const Status status =
      state_->client->Run([&executor](const coordinator::StepPlan& plan) { return executor.Execute(plan); });
#if defined(BITFLEET_HAVE_MPI)
  // A group that ends in error may have lost a peer without any collective noticing (the
  // coordinator ends every rank's stream when one goes silent, and this rank may have been
  // waiting for a plan, not in a collective): MPI_Finalize at exit would wait for that peer
  // forever. So would a rank stopped by a signal on its own (CANCELLED), whose peers carry on.
  // Only the coordinator's Shutdown (OK) ends every rank together. Leave as after a timed-out
  // collective; mpirun then ends the job.
  if (!status.ok() && state_->world_size > 1 && sharding::LaunchedUnderMpi()) {
    sharding::MarkMpiGroupBroken();
  }
#endif
  return status;
}

void WorkerProcess::Stop() { state_->client->Stop(); }

}  // namespace bitfleet::worker

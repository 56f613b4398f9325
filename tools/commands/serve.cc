// `bitfleet serve`: the one-box default (DESIGN.md §7). Runs the coordinator in this process
// and launches each replica's workers as a child: `mpirun -np TP ... bitfleet worker` (or, for
// TP 1 without mpirun, the worker itself), pointed at the coordinator's control port on
// loopback. A replica whose workers die fails its in-flight requests (UNAVAILABLE), reports
// NOT_SERVING and is relaunched up to --max-restarts times; when no replica can come back,
// serve exits 1. Ctrl-C / SIGTERM drain: no new requests, in-flight ones finish (up to
// --drain-timeout; a second Ctrl-C ends the drain at once), the workers exit, then serve exits 0.
//
// --in-process (TP 1, one replica): the model runs in the serve process itself, driven by the
// scheduler's dispatch thread, with no worker process and no control stream. Each step then
// saves a plan and a result crossing gRPC and the worker's thread hand-offs; the price is
// isolation: a crash in the model takes the server down, and nothing restarts it (a step that
// fails marks the replica down, and serve drains and exits 1).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/inprocess_executor.h"
#include "core/logging.h"
#include "model/gguf/gguf.h"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "tools/commands/gpu_placement.h"
#include "tools/commands/ports_file.h"
#include "tools/commands/serving_flags.h"
#include "tools/commands/shutdown_signal.h"
#include "tools/commands/worker_launcher.h"
#include "worker/runner_factory.h"
#include "worker/worker_process.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct ServeFlags {
  coordinator::CoordinatorServerOptions server;
  worker::WorkerOptions worker;
  ServingTimingFlags timing;
  std::string host = "127.0.0.1";
  int port = 50051;
  double drain_timeout_s = 30;
  int max_restarts = 3;
  double restart_delay_s = 2;
  std::string mpirun = "mpirun";
  std::string mpirun_args = "--bind-to none";
  bool in_process = false;
  std::string ports_file;
  // --device cuda with several replicas: each replica's CUDA_VISIBLE_DEVICES (gpu_placement.h).
  std::vector<std::string> replica_devices;
};

// One replica's worker group and its restart bookkeeping.
struct Replica {
  int index = 0;
  ChildProcess child;
  int restarts = 0;
  std::optional<Clock::time_point> restart_at;
  int registrations_at_launch = 0;  // the coordinator's count when this group was launched
  bool dead = false;                // restarts exhausted, or the group never came up
  // Out of service while its workers run: served (healthy at least once since this launch),
  // then failed by the coordinator (a step timeout, a silent rank) since `unhealthy_since`.
  bool served = false;
  std::optional<Clock::time_point> unhealthy_since;
};

// How long a replica that served may stay out of service while its workers still run before
// serve ends them (and then relaunches or gives up, as for workers that died): a worker whose
// stream the coordinator ended exits within a heartbeat, so one still running after twice the
// heartbeat timeout is stuck (in a step that never returns, say).
Clock::duration StuckReplicaGrace(const ServeFlags& flags) {
  return 2 * std::chrono::milliseconds(flags.timing.ToTiming().heartbeat_timeout);
}

// The command line that starts replica `index`'s ranks, and the environment it needs.
struct LaunchCommand {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

StatusOr<LaunchCommand> WorkerCommand(const ServeFlags& flags, int index, int control_port) {
  BF_ASSIGN_OR_RETURN(const std::string self, SelfExecutable());
  const worker::WorkerOptions& w = flags.worker;
  const coordinator::CoordinatorServerOptions& s = flags.server;
  LaunchCommand command;
  StatusOr<std::string> mpirun = FindExecutable(flags.mpirun);
  if (mpirun.ok()) {
    command.argv = {*mpirun, "-np", std::to_string(s.tensor_parallel), "--oversubscribe"};
    if (geteuid() == 0) {
      command.argv.push_back("--allow-run-as-root");
      command.env = {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"};
    }
    for (absl::string_view arg : absl::StrSplit(flags.mpirun_args, ' ', absl::SkipEmpty())) {
      command.argv.emplace_back(arg);
    }
  } else if (s.tensor_parallel > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("--tp ", s.tensor_parallel, " needs mpirun (", std::string(mpirun.status().message()), ")"));
  }
  const std::vector<std::string> worker = {
      self,
      "worker",
      "--log-level",  // the workers log at the level the server was given
      LogLevelName(),
      "--coordinator",
      absl::StrCat("127.0.0.1:", control_port),
      "--replica",
      std::to_string(index),
      "--model",
      s.model,
      "--device",
      worker::RunnerDeviceName(w.device),
      "--threads",
      std::to_string(w.threads),
      "--ctx",
      std::to_string(s.max_context),
      "--kv-block-size",
      std::to_string(s.kv_block_size),
      "--kv-blocks",
      std::to_string(w.kv_blocks),
      "--kv-type",
      cache::KvTypeName(w.kv_type),
      "--kv-cache-mib",
      std::to_string(w.kv_cache_mib),
      "--gpu-memory-utilization",
      absl::StrCat(w.gpu_memory_utilization),
      "--comm",
      w.comm,
      "--max-step-tokens",
      std::to_string(w.max_step_tokens),
      "--max-step-sequences",
      std::to_string(w.max_step_sequences),
      "--max-logit-rows",
      std::to_string(w.max_logit_rows),
  };
  command.argv.insert(command.argv.end(), worker.begin(), worker.end());
  if (index < static_cast<int>(flags.replica_devices.size())) {
    command.env.push_back(absl::StrCat("CUDA_VISIBLE_DEVICES=", flags.replica_devices[index]));
  }
  return command;
}

// --device cuda: each replica's devices, and the workers' communicator (gpu_placement.h).
Status PlaceGpus(ServeFlags* flags) {
  GpuPlacementInput in;
  in.tp = flags->server.tensor_parallel;
  in.replicas = flags->server.replicas;
  in.usable_gpus = worker::UsableCudaDeviceCount();
  in.nccl_built = worker::NcclBuilt();
  in.kv_pool_given = flags->worker.kv_blocks > 0 || flags->worker.gpu_memory_utilization <= 0;
  if (const char* env = std::getenv("CUDA_VISIBLE_DEVICES"); env != nullptr) in.cuda_visible_devices = env;
  BF_ASSIGN_OR_RETURN(GpuPlacement placement, PlaceGpuRanks(in));
  flags->worker.comm = placement.comm;
  flags->replica_devices = std::move(placement.replica_devices);
  const int ranks = in.tp * in.replicas;
  if (in.tp > 1 && placement.comm == "nccl") {
    Logger("serve")->info("{} GPU ranks on {} visible GPUs: collectives through NCCL on the devices", ranks,
                          in.usable_gpus);
  } else if (in.tp > 1 && !placement.staged_reason.empty()) {
    Logger("serve")->warn("{} GPU ranks: collectives through Open MPI, staged through host memory ({})", ranks,
                          placement.staged_reason);
  }
  return absl::OkStatus();
}

Status Launch(const ServeFlags& flags, coordinator::CoordinatorServer& server, Replica& replica) {
  BF_ASSIGN_OR_RETURN(LaunchCommand command, WorkerCommand(flags, replica.index, server.control_port()));
  replica.registrations_at_launch = server.replica_registrations(replica.index);
  replica.served = false;
  replica.unhealthy_since.reset();
  BF_ASSIGN_OR_RETURN(replica.child, ChildProcess::Spawn(command.argv, command.env));
  Logger("serve")->info("replica {}: started {} rank(s), pid {}", replica.index, flags.server.tensor_parallel,
                        replica.child.pid());
  return absl::OkStatus();
}

// For a replica whose workers run: tracks when it went out of service after serving, and ends
// its workers once that has lasted StuckReplicaGrace.
void EndIfStuck(const ServeFlags& flags, const coordinator::CoordinatorServer& server, Replica& replica) {
  if (server.replica_healthy(replica.index)) {
    replica.served = true;
    replica.unhealthy_since.reset();
    return;
  }
  if (!replica.served) return;  // still coming up
  if (!replica.unhealthy_since) replica.unhealthy_since = Clock::now();
  const Clock::duration out = Clock::now() - *replica.unhealthy_since;
  if (out <= StuckReplicaGrace(flags)) return;
  Logger("serve")->error("replica {}: out of service for {} s while its workers still run (a rank stuck in a step?); "
                         "ending them",
                         replica.index, std::chrono::duration<double>(out).count());
  replica.child.Terminate(std::chrono::seconds(5));
}

// Waits up to 100 ms for Ctrl-C / SIGTERM: true (logged, the drain follows) when one came.
bool ShutdownRequested(const ServeFlags& flags) {
  const int signal = WaitForShutdownSignal(std::chrono::milliseconds(100));
  if (signal != 0) Logger("serve")->info("signal {}: draining (up to {} s)", signal, flags.drain_timeout_s);
  return signal != 0;
}

// Watches the replicas until a shutdown signal (OK) or until none can come back (UNAVAILABLE).
Status Supervise(const ServeFlags& flags, coordinator::CoordinatorServer& server, std::vector<Replica>& replicas) {
  auto log = Logger("serve");
  bool ready_logged = false;
  while (true) {
    if (ShutdownRequested(flags)) return absl::OkStatus();
    const int healthy = server.healthy_replicas();
    if (!ready_logged && healthy == static_cast<int>(replicas.size())) {
      log->info("ready: {} on {}:{} ({} replica(s) x TP {}); Ctrl-C to stop", server.model_name(), flags.host,
                server.api_port(), replicas.size(), flags.server.tensor_parallel);
      ready_logged = true;
    }
    for (Replica& replica : replicas) {
      std::string how;
      // Workers stuck out of service are ended here; the exit check below then relaunches the
      // replica or gives up on it.
      if (!replica.dead && !replica.restart_at && !replica.child.Poll()) EndIfStuck(flags, server, replica);
      if (!replica.dead && !replica.restart_at && replica.child.Poll(&how)) {
        ready_logged = false;
        if (server.replica_registrations(replica.index) == replica.registrations_at_launch) {
          // Workers that never registered fail the same way again (bad model, flags, MPI).
          replica.dead = true;
          log->error("replica {}: workers exited ({}) before registering; not restarting (see their errors above)",
                     replica.index, how);
        } else if (replica.restarts < flags.max_restarts) {
          ++replica.restarts;
          replica.restart_at = Clock::now() + SecondsToDuration(flags.restart_delay_s);
          log->error("replica {}: workers exited ({}); restart {} of {} in {} s", replica.index, how, replica.restarts,
                     flags.max_restarts, flags.restart_delay_s);
        } else {
          replica.dead = true;
          log->error("replica {}: workers exited ({}); no restarts left", replica.index, how);
        }
      }
      if (replica.restart_at && Clock::now() >= *replica.restart_at) {
        replica.restart_at.reset();
        if (Status s = Launch(flags, server, replica); !s.ok()) {
          log->error("replica {}: relaunch failed: {}", replica.index, std::string(s.message()));
          replica.dead = true;
        }
      }
    }
    if (std::all_of(replicas.begin(), replicas.end(), [](const Replica& r) { return r.dead; })) {
      return absl::UnavailableError("every replica's workers exited and none can be restarted");
    }
  }
}

// The replica of `serve --in-process`: the runner a worker would build, in this process.
StatusOr<std::unique_ptr<coordinator::InProcessExecutor>> InProcessReplica(const ServeFlags& flags) {
  if (flags.server.tensor_parallel != 1 || flags.server.replicas != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--in-process runs one replica at TP 1 in this process (got --tp ",
                                                   flags.server.tensor_parallel, " --replicas ", flags.server.replicas,
                                                   "); leave it off to launch worker processes"));
  }
  worker::WorkerOptions options = flags.worker;
  options.max_context = flags.server.max_context;
  options.kv_block_size = flags.server.kv_block_size;
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(flags.server.model));
  std::shared_ptr<const gguf::GgufFile> shared = std::move(file);
  BF_ASSIGN_OR_RETURN(worker::RunnerOptions runner_options, worker::ResolveRunnerOptions(options, *shared));
  BF_ASSIGN_OR_RETURN(std::unique_ptr<worker::StepRunner> runner, worker::CreateRunner(shared, runner_options));
  Logger("serve")->info("replica 0 in this process: {} runner ({}), {} KV blocks of {} tokens",
                        worker::RunnerDeviceName(options.device), runner->kernel_variant(), runner->kv_blocks(),
                        runner->kv_block_size());
  return std::make_unique<coordinator::InProcessExecutor>(std::move(runner), flags.server.timing.step_timeout);
}

// serve --in-process: a step that never returns (a hung device, a deadlock) cannot be
// interrupted, and the drain and shutdown would wait for it forever. Past --step-timeout this
// thread ends the process with exit code 1 for its supervisor (Kubernetes, systemd) to restart
// it; the clients see their connections end. Stops (joined) when destroyed.
class StuckStepWatchdog {
 public:
  explicit StuckStepWatchdog(const coordinator::InProcessExecutor& replica)
      : thread_([this, &replica] {
          while (!stop_.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (replica.stuck()) {
              Logger("serve")->critical("a step of the replica in this process has run past --step-timeout and "
                                        "cannot be interrupted; exiting 1");
              FlushLogsAndExit(1);
            }
          }
        }) {}
  ~StuckStepWatchdog() {
    stop_.store(true);
    thread_.join();
  }
  StuckStepWatchdog(const StuckStepWatchdog&) = delete;
  StuckStepWatchdog& operator=(const StuckStepWatchdog&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// serve --in-process: runs until a shutdown signal (OK) or until `replica` fails (UNAVAILABLE:
// nothing restarts it here, so serve exits non-zero for its supervisor to act). The replica is
// healthy from its creation until a step fails, so its own flag, not the scheduler's view
// (which starts false), tells a failure from a start.
Status WaitForShutdown(const coordinator::CoordinatorServer& server, const coordinator::Executor& replica,
                       const ServeFlags& flags) {
  auto log = Logger("serve");
  bool ready_logged = false;
  while (true) {
    if (ShutdownRequested(flags)) return absl::OkStatus();
    if (!replica.healthy()) {
      return absl::UnavailableError("the replica in this process failed (its error is above); stopping");
    }
    if (!ready_logged && server.healthy_replicas() > 0) {
      log->info("ready: {} on {}:{} (1 replica in this process); Ctrl-C to stop", server.model_name(), flags.host,
                server.api_port());
      ready_logged = true;
    }
  }
}

Status Serve(ServeFlags flags) {
  BlockShutdownSignals();
  auto log = Logger("serve");
  flags.server.listen = absl::StrCat(flags.host, ":", flags.port);
  flags.server.http_host = flags.host;
  flags.server.control = "127.0.0.1:0";  // internal: loopback, any free port
  flags.server.timing = flags.timing.ToTiming();
  flags.worker.model = flags.server.model;
  if (flags.worker.device == worker::RunnerDevice::kCuda && !flags.in_process) {
    BF_RETURN_IF_ERROR(PlaceGpus(&flags));
  }
  if (flags.worker.threads <= 0) {
    flags.worker.threads = std::max(1, DefaultThreads() / (flags.server.tensor_parallel * flags.server.replicas));
  }
  if (flags.in_process) {
    BF_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::InProcessExecutor> executor, InProcessReplica(flags));
    const coordinator::InProcessExecutor& replica = *executor;  // owned by the server from here on
    std::vector<std::unique_ptr<coordinator::Executor>> local;
    local.push_back(std::move(executor));
    BF_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::CoordinatorServer> server,
                        coordinator::CoordinatorServer::Start(flags.server, std::move(local)));
    BF_ASSIGN_OR_RETURN(const PortsFile ports, PortsFile::Write(flags.ports_file, *server));
    const StuckStepWatchdog watchdog(replica);  // destroyed before the server: it reads the replica
    const Status status = WaitForShutdown(*server, replica, flags);
    DrainUntilDoneOrSignaled(*server, std::chrono::duration<double>(flags.drain_timeout_s));
    server->Shutdown();
    if (status.ok()) log->info("stopped");
    return status;
  }
  BF_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::CoordinatorServer> server,
                      coordinator::CoordinatorServer::Start(flags.server));
  BF_ASSIGN_OR_RETURN(const PortsFile ports, PortsFile::Write(flags.ports_file, *server));
  std::vector<Replica> replicas(flags.server.replicas);
  Status status = absl::OkStatus();
  for (int i = 0; i < flags.server.replicas && status.ok(); ++i) {
    replicas[i].index = i;
    status = Launch(flags, *server, replicas[i]);
  }
  if (status.ok()) status = Supervise(flags, *server, replicas);

  // Drain, then make sure every child is gone.
  DrainUntilDoneOrSignaled(*server, std::chrono::duration<double>(flags.drain_timeout_s));
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  for (Replica& replica : replicas) {
    const auto left = std::max(Clock::duration::zero(), deadline - Clock::now());
    if (!replica.child.WaitFor(std::chrono::duration_cast<std::chrono::milliseconds>(left))) {
      log->warn("replica {}: workers did not exit; terminating them", replica.index);
      replica.child.Terminate(std::chrono::seconds(3));
    }
  }
  server->Shutdown();
  if (status.ok()) log->info("stopped");
  return status;
}

}  // namespace

void RegisterServe(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  flags->worker.threads = 0;  // resolved from the machine and the group sizes
  CLI::App* cmd = app.add_subcommand(
      "serve", "Serve a model on this machine: the coordinator plus its workers (mpirun), Ctrl-C to stop");
  cmd->add_option("-m,--model", flags->server.model, "GGUF model file")->required();
  cmd->add_option("--tp", flags->server.tensor_parallel, "Ranks per replica (tensor-parallel degree)")
      ->capture_default_str();
  cmd->add_option("--replicas", flags->server.replicas, "Replicas (worker groups)")->capture_default_str();
  cmd->add_option("--host", flags->host, "Client API address to bind, gRPC and HTTP (0.0.0.0: every interface)")
      ->capture_default_str();
  cmd->add_option("--port", flags->port, "Client API port (gRPC; 0: any free port, see --ports-file)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  AddPortsFileFlag(*cmd, &flags->ports_file);
  AddClientApiFlags(*cmd, &flags->server);
  AddSchedulingFlags(*cmd, &flags->server);
  AddWorkerShapeFlags(*cmd, &flags->worker, /*with_context=*/false);
  AddTimingFlags(*cmd, &flags->timing);
  cmd->add_option("--drain-timeout", flags->drain_timeout_s,
                  "Seconds in-flight requests get to finish on Ctrl-C (a second Ctrl-C ends the drain at once)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  cmd->add_option("--max-restarts", flags->max_restarts, "Relaunches of a replica whose workers died")
      ->capture_default_str();
  cmd->add_option("--restart-delay", flags->restart_delay_s, "Seconds before relaunching a dead replica")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--mpirun", flags->mpirun, "mpirun to launch the workers with")->capture_default_str();
  cmd->add_option("--mpirun-args", flags->mpirun_args, "Extra mpirun arguments (space separated)")
      ->capture_default_str();
  cmd->add_flag("--in-process", flags->in_process,
                "Run the model in this process (--tp 1, one replica): no worker process, no control stream, a "
                "shorter path per step; a crash in the model stops the server and nothing restarts it");
  cmd->callback([flags, exit_code] {
    const Status status = Serve(*flags);
    *exit_code = status.ok() ? 0 : ReportError("serve", status);
  });
}

}  // namespace bitfleet::tools

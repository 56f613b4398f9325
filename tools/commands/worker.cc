// `bitfleet worker`: one rank of a tensor-parallel group (DESIGN.md §7). Started by mpirun
// (rank and world size from MPI) or on its own (--rank/--world-size, a group of one). Loads its
// shard, registers with the coordinator's control endpoint and runs the plans it is sent until
// the coordinator asks it to exit (exit 0). SIGINT/SIGTERM stop it (exit 0); a broken group
// (lost coordinator, failed collective) exits 1 so the launcher can restart it.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "tools/commands/serving_flags.h"
#include "tools/commands/shutdown_signal.h"
#include "worker/worker_process.h"

namespace bitfleet::tools {
namespace {

struct WorkerFlags {
  worker::WorkerOptions options;
  double connect_timeout_s = 60;
  double collective_timeout_s = 60;
};

Status RunWorker(const WorkerFlags& flags) {
  BlockShutdownSignals();
  worker::WorkerOptions options = flags.options;
  options.connect_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(SecondsToDuration(flags.connect_timeout_s));
  options.collective_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(SecondsToDuration(flags.collective_timeout_s));
  // A step past the coordinator's step timeout (plus its heartbeat timeout): the replica has been
  // failed and this rank will never finish the step, so it ends here for its supervisor (serve,
  // mpirun, Kubernetes) to restart. No drain: the step holds the runner.
  options.on_stuck_step = [](std::chrono::milliseconds running) {
    Logger("worker")->error("a step has run for {} ms, past the coordinator's step timeout: exiting", running.count());
    FlushLogsAndExit(1);
  };
  BF_ASSIGN_OR_RETURN(std::unique_ptr<worker::WorkerProcess> process, worker::WorkerProcess::Create(options));
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    bool stopping = false;
    while (!done.load()) {
      const int signal = WaitForShutdownSignal(std::chrono::milliseconds(200));
      if (signal == 0) continue;
      if (!stopping) {
        Logger("worker")->info("signal {}: stopping (a second signal exits at once)", signal);
        process->Stop();
        stopping = true;
        continue;
      }
      // The stop is stuck (a step or a peer that never returns): signals stay blocked in every
      // thread, so without this only SIGKILL would end the process.
      Logger("worker")->error("signal {} again: exiting now", signal);
      FlushLogsAndExit(1);
    }
  });
  Status status = process->Run();
  done.store(true);
  watcher.join();
  if (status.code() == absl::StatusCode::kCancelled) return absl::OkStatus();  // stopped by a signal
  return status;
}

}  // namespace

void RegisterWorker(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<WorkerFlags>();
  flags->options.threads = DefaultThreads();
  CLI::App* cmd = app.add_subcommand("worker", "Run one rank of a tensor-parallel group for a coordinator");
  cmd->add_option("--coordinator", flags->options.coordinator, "The coordinator's control address (host:port)")
      ->required();
  cmd->add_option("-m,--model", flags->options.model, "GGUF model file")->required();
  cmd->add_option("--rank", flags->options.rank, "Rank in the group (default: from mpirun, else 0)");
  cmd->add_option("--world-size", flags->options.world_size, "Ranks in the group (default: from mpirun, else 1)");
  cmd->add_option("--replica", flags->options.replica, "Which replica (group) this rank belongs to")
      ->capture_default_str();
  cmd->add_option("--comm", flags->options.comm,
                  "Communicator between ranks: auto (Open MPI under mpirun) | nccl (one GPU per rank; bootstrapped "
                  "over mpirun, else through the coordinator with --rank/--world-size)")
      ->check(CLI::IsMember({"auto", "nccl"}))
      ->capture_default_str();
  AddWorkerShapeFlags(*cmd, &flags->options, /*with_context=*/true);
  cmd->add_option("--connect-timeout", flags->connect_timeout_s, "Seconds to keep trying to register")
      ->capture_default_str();
  cmd->add_option("--collective-timeout", flags->collective_timeout_s,
                  "Seconds a collective may wait for a peer before the group is declared broken")
      ->capture_default_str();
  cmd->callback([flags, exit_code] {
    const Status status = RunWorker(*flags);
    *exit_code = status.ok() ? 0 : ReportError("worker", status);
  });
}

}  // namespace bitfleet::tools

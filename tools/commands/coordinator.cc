// `bitfleet coordinator`: the serving front end on its own (DESIGN.md §1, §7). Loads the
// model's tokenizer and config (no weights), serves the client API and waits for `bitfleet
// worker` ranks to register on the control endpoint. SIGINT/SIGTERM drain: no new requests,
// in-flight ones finish up to --drain-timeout, the workers are asked to exit, then exit 0.
#include <chrono>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "coordinator/coordinator_server.h"
#include "core/logging.h"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "tools/commands/ports_file.h"
#include "tools/commands/serving_flags.h"
#include "tools/commands/shutdown_signal.h"

namespace bitfleet::tools {
namespace {

struct CoordinatorFlags {
  coordinator::CoordinatorServerOptions server;
  ServingTimingFlags timing;
  double drain_timeout_s = 30;
  std::string ports_file;
};

Status RunCoordinator(const CoordinatorFlags& flags) {
  BlockShutdownSignals();
  coordinator::CoordinatorServerOptions options = flags.server;
  options.timing = flags.timing.ToTiming();
  BF_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::CoordinatorServer> server,
                      coordinator::CoordinatorServer::Start(options));
  BF_ASSIGN_OR_RETURN(const PortsFile ports, PortsFile::Write(flags.ports_file, *server));
  int signal = 0;
  while ((signal = WaitForShutdownSignal(std::chrono::milliseconds(500))) == 0) {
  }
  Logger("coordinator")->info("signal {}: draining (up to {} s)", signal, flags.drain_timeout_s);
  DrainUntilDoneOrSignaled(*server, std::chrono::duration<double>(flags.drain_timeout_s));
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace

void RegisterCoordinator(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<CoordinatorFlags>();
  CLI::App* cmd = app.add_subcommand(
      "coordinator", "Serve the gRPC API and schedule requests onto registered `bitfleet worker` groups");
  cmd->add_option("-m,--model", flags->server.model, "GGUF model file (tokenizer and config are read; no weights)")
      ->required();
  cmd->add_option("--listen", flags->server.listen, "Client API address (host:port; port 0: any free port, see --ports-file)")
      ->capture_default_str();
  cmd->add_option("--control", flags->server.control, "Worker control address (host:port; internal, not for clients)")
      ->capture_default_str();
  AddClientApiFlags(*cmd, &flags->server);
  AddPortsFileFlag(*cmd, &flags->ports_file);
  cmd->add_option("--tp", flags->server.tensor_parallel, "Ranks per replica (tensor-parallel degree)")
      ->capture_default_str();
  cmd->add_option("--replicas", flags->server.replicas, "Replicas (worker groups)")->capture_default_str();
  AddSchedulingFlags(*cmd, &flags->server);
  AddTimingFlags(*cmd, &flags->timing);
  cmd->add_option("--drain-timeout", flags->drain_timeout_s, "Seconds in-flight requests get to finish on SIGTERM (a second signal ends the drain at once)")
      ->capture_default_str();
  cmd->callback([flags, exit_code] {
    const Status status = RunCoordinator(*flags);
    *exit_code = status.ok() ? 0 : ReportError("coordinator", status);
  });
}

}  // namespace bitfleet::tools

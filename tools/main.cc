// `bitfleet`: one binary, one subcommand per job (DESIGN.md §8).
#include <cstdlib>
#include <string>

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "tools/commands/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"bitfleet: tensor-parallel inference for low-bit (ternary, int4) language models"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();
  app.fallthrough();  // `bitfleet serve ... --log-level debug` too: the option may follow the subcommand
  app.parse_complete_callback([&] {
    if (!bitfleet::SetLogLevel(log_level)) {
      throw CLI::ValidationError("--log-level", "unknown level '" + log_level + "'");
    }
  });

  int exit_code = 0;
  (void)exit_code;
  bitfleet::tools::RegisterInspect(app, &exit_code);
  bitfleet::tools::RegisterConvert(app, &exit_code);
  bitfleet::tools::RegisterSynth(app, &exit_code);
  bitfleet::tools::RegisterQuantize(app, &exit_code);
  bitfleet::tools::RegisterRun(app, &exit_code);
  bitfleet::tools::RegisterLogits(app, &exit_code);
  bitfleet::tools::RegisterEval(app, &exit_code);
  bitfleet::tools::RegisterBench(app, &exit_code);
  bitfleet::tools::RegisterTokenize(app, &exit_code);
  bitfleet::tools::RegisterChatTemplate(app, &exit_code);
  bitfleet::tools::RegisterServe(app, &exit_code);
  bitfleet::tools::RegisterCoordinator(app, &exit_code);
  bitfleet::tools::RegisterWorker(app, &exit_code);
  bitfleet::tools::RegisterGenerate(app, &exit_code);
  bitfleet::tools::RegisterHealth(app, &exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}

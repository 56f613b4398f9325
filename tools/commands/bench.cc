// `bitfleet bench`: benchmark programs that print JSON (DESIGN.md §10). Each benchmark is a
// sub-subcommand registered by its own file.
#include "CLI/CLI.hpp"
#include "tools/commands/commands.h"

namespace bitfleet::tools {

void RegisterBench(CLI::App& app, int* exit_code) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (JSON output)");
  bench->require_subcommand(1);
  RegisterBenchDecode(*bench, exit_code);
  RegisterBenchKernels(*bench, exit_code);
  RegisterBenchTokenizer(*bench, exit_code);
  RegisterBenchServe(*bench, exit_code);
  RegisterBenchJsonMask(*bench, exit_code);
}

}  // namespace bitfleet::tools

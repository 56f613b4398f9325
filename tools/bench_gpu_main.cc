// `bitfleet-bench-gpu`: the GPU benchmark (tools/commands/bench_gpu.cc) as its own small binary.
// It links only the kernels and core (no gRPC, no MPI), so scripts/gpu-check.sh can carry it,
// with a few shared libraries, to a GPU machine that lacks bitfleet's Debian dependencies.
// Usage: bitfleet-bench-gpu [bench gpu options]   (see --help)
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "tools/commands/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"bitfleet-bench-gpu: CUDA kernel and decode-step throughput (JSON lines)"};
  int exit_code = 0;
  bitfleet::tools::RegisterBenchGpu(app, &exit_code);
  app.require_subcommand(1);
  // The options are those of `bench gpu`: insert the subcommand name.
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i) args.emplace_back(argv[i]);  // CLI11 takes them reversed
  args.emplace_back("gpu");
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}

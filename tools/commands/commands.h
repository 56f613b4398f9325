// Subcommands of the `bitfleet` binary. Each Register* adds one subcommand to `app`; the
// callback it installs runs the command and stores its exit code in `*exit_code`.
#pragma once

#include "CLI/CLI.hpp"

namespace bitfleet::tools {

void RegisterInspect(CLI::App& app, int* exit_code);

}  // namespace bitfleet::tools

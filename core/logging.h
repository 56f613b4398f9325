// Structured logging through spdlog: one named logger per module ("gguf", "tokenizer", ...).
// Loggers write to stderr so stdout stays clean for command output (ids, JSON, text).
#pragma once

#include <memory>
#include <string>

#include "spdlog/spdlog.h"

namespace bitfleet {

// Returns the logger called `module`, creating it on first use. Thread-safe.
std::shared_ptr<spdlog::logger> Logger(const std::string& module);

// Sets the level of every current and future logger ("trace", "debug", "info", "warn",
// "error", "off"). Unknown names leave the level unchanged and return false.
bool SetLogLevel(const std::string& level);

// The level SetLogLevel last set ("info" by default), by the name it takes: what a process
// passes on to the processes it starts.
std::string LogLevelName();

// Flushes every logger, then ends the process at once with `exit_code` (std::_Exit: no
// destructors, no atexit handlers). For a process that cannot stop in order (a step that never
// returns, a stop that is stuck), so that its last words still reach the log.
[[noreturn]] void FlushLogsAndExit(int exit_code);

}  // namespace bitfleet

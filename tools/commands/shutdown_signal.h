// SIGINT / SIGTERM handling for the long-running commands (serve, coordinator, worker).
//
// BlockShutdownSignals() must run first thing, before any thread starts (gRPC, MPI, thread
// pools): every thread inherits the blocked mask, so the signals stay pending until the main
// thread collects them with WaitForShutdownSignal, and no library's thread is interrupted.
// Children started with a clean mask (see worker_launcher.h) are unaffected.
#pragma once

#include <chrono>

namespace bitfleet::tools {

// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it starts later).
void BlockShutdownSignals();

// Waits up to `timeout` for SIGINT or SIGTERM. Returns the signal number, or 0 on timeout.
int WaitForShutdownSignal(std::chrono::milliseconds timeout);

}  // namespace bitfleet::tools

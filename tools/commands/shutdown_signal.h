// SIGINT / SIGTERM handling for the long-running commands (serve, coordinator, worker).
//
// BlockShutdownSignals() must run first thing, before any thread starts (gRPC, MPI, thread
// pools): every thread inherits the blocked mask, so the signals stay pending until the main
// thread collects them with WaitForShutdownSignal, and no library's thread is interrupted.
// Children started with a clean mask (see worker_launcher.h) are unaffected.
#pragma once

#include <chrono>

#include "coordinator/coordinator_server.h"

namespace bitfleet::tools {

// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it starts later).
void BlockShutdownSignals();

// Waits up to `timeout` for SIGINT or SIGTERM. Returns the signal number, or 0 on timeout.
int WaitForShutdownSignal(std::chrono::milliseconds timeout);

// server.Drain for up to `timeout`, after a first shutdown signal. A second SIGINT/SIGTERM
// during the drain ends it at once (requests still running end UNAVAILABLE), so an operator
// is never stuck behind a long --drain-timeout.
void DrainUntilDoneOrSignaled(coordinator::CoordinatorServer& server, std::chrono::duration<double> timeout);

}  // namespace bitfleet::tools

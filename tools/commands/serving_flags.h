// Command-line flags shared by the serving commands (serve, coordinator, worker), so each
// flag means the same thing, with the same default, everywhere.
#pragma once

#include <chrono>

#include "CLI/CLI.hpp"
#include "coordinator/coordinator_server.h"
#include "coordinator/grpc_executor.h"
#include "worker/worker_process.h"

namespace bitfleet::tools {

// Control-plane liveness (coordinator side; the workers learn it at registration).
struct ServingTimingFlags {
  int heartbeat_ms = 500;
  int heartbeat_timeout_ms = 5000;
  double step_timeout_s = 120;
  coordinator::ControlTiming ToTiming() const;
};
void AddTimingFlags(CLI::App& cmd, ServingTimingFlags* flags);

// Coordinator scheduling: --ctx, --kv-block-size, --max-queue, --step-token-budget,
// --no-prefix-cache, --prompt-score-cache-mib.
void AddSchedulingFlags(CLI::App& cmd, coordinator::CoordinatorServerOptions* options);

// The coordinator's client-facing flags: --http-port and --http-threads (the OpenAI-compatible
// API), --metrics-port (Prometheus /metrics and /health), --api-keys and --tls-cert, --tls-key,
// --tls-client-ca (both client APIs).
void AddClientApiFlags(CLI::App& cmd, coordinator::CoordinatorServerOptions* options);

// Worker shape: --device, --threads, --kv-blocks, --max-step-tokens, --max-step-sequences, and with
// `with_context` also --ctx and --kv-block-size (serve shares those with the coordinator).
void AddWorkerShapeFlags(CLI::App& cmd, worker::WorkerOptions* options, bool with_context);

std::chrono::steady_clock::duration SecondsToDuration(double seconds);

}  // namespace bitfleet::tools

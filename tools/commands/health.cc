// `bitfleet health`: a grpc.health.v1 client for container health checks, scripts and probes
// (Debian ships no grpc_health_probe). Asks Health.Check for one service and prints the answer:
//
//   SERVING | NOT_SERVING | SERVICE_UNKNOWN (the server has no such service) | UNREACHABLE: ...
//
// Exit 0 when the answer is SERVING, 1 for anything else (the two codes Docker's HEALTHCHECK
// and Kubernetes' exec probes understand). With --wait it keeps asking until SERVING or the
// time is up (for start-up scripts).
//
// What the coordinator reports (coordinator/coordinator_server.h): on the client port, "" and
// "bitfleet.v1.Inference" are SERVING while a replica can take requests and the server is not
// draining, "bitfleet.v1.Inference/replica-K" per replica; on the control port "" is SERVING
// while the process runs (liveness).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "tools/commands/commands.h"
#include "tools/commands/grpc_client.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;
using grpc::health::v1::HealthCheckResponse;

// The variable the container images set, so `bitfleet health` alone checks the local server.
constexpr char kTargetEnv[] = "BITFLEET_HEALTH_TARGET";

struct HealthFlags {
  std::string target = "127.0.0.1:50051";
  std::string service;      // "": the server as a whole
  double timeout_s = 5;     // per Check call
  double wait_s = 0;        // 0: ask once
  ClientSecurity security;  // TLS only: health needs no API key
};

constexpr std::chrono::milliseconds kRetryInterval{500};  // between attempts while waiting

struct Answer {
  bool serving = false;
  std::string text;  // what to print
};

Answer CheckOnce(grpc::health::v1::Health::Stub& stub, const HealthFlags& flags) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           std::chrono::duration<double>(flags.timeout_s)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(flags.service);
  HealthCheckResponse response;
  const grpc::Status status = stub.Check(&context, request, &response);
  if (status.ok()) {
    return {response.status() == HealthCheckResponse::SERVING,
            HealthCheckResponse::ServingStatus_Name(response.status())};
  }
  // The health protocol answers NOT_FOUND for a service the server does not know.
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return {false, "SERVICE_UNKNOWN"};
  return {false, "UNREACHABLE: " + status.error_message()};
}

int RunHealth(const HealthFlags& flags) {
  auto credentials = ChannelCredentialsFor(flags.security);
  if (!credentials.ok()) {
    std::printf("UNREACHABLE: %s\n", std::string(credentials.status().message()).c_str());
    return 1;
  }
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(flags.target, *credentials));
  const Clock::time_point give_up =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(flags.wait_s));
  Answer answer = CheckOnce(*stub, flags);
  while (!answer.serving && Clock::now() < give_up) {
    std::this_thread::sleep_for(kRetryInterval);
    answer = CheckOnce(*stub, flags);
  }
  std::printf("%s\n", answer.text.c_str());
  return answer.serving ? 0 : 1;
}

}  // namespace

void RegisterHealth(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<HealthFlags>();
  CLI::App* cmd = app.add_subcommand(
      "health", "Ask a server's grpc.health.v1 service for its status (exit 0 only when SERVING)");
  cmd->add_option("--target", flags->target, "Server address (host:port); default from $BITFLEET_HEALTH_TARGET")
      ->envname(kTargetEnv)
      ->capture_default_str();
  cmd->add_option("--service", flags->service,
                  "Service to ask about (\"\": the whole server; e.g. bitfleet.v1.Inference/replica-0)");
  cmd->add_option("--timeout", flags->timeout_s, "Seconds one check may take")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--wait", flags->wait_s, "Keep asking for up to this many seconds until SERVING (0: ask once)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  AddClientTlsFlags(*cmd, &flags->security);
  cmd->callback([flags, exit_code] { *exit_code = RunHealth(*flags); });
}

}  // namespace bitfleet::tools

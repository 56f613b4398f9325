#include "tools/commands/grpc_client.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace bitfleet::tools {

using Clock = std::chrono::steady_clock;

void AddApiKeyFlag(CLI::App& cmd, std::string* api_key) {
  if (const char* env = std::getenv("BITFLEET_API_KEY")) *api_key = env;
  cmd.add_option("--api-key", *api_key,
                 "API key for a server started with --api-keys (default: $BITFLEET_API_KEY, which keeps it out of ps)");
}

void AddApiKey(grpc::ClientContext& context, const std::string& api_key) {
  if (!api_key.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", api_key));
}

std::string DescribeGrpcStatus(const grpc::Status& status) {
  static const char* kNames[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const int code = static_cast<int>(status.error_code());
  const char* name = code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
  return absl::StrCat(name, ": ", status.error_message());
}

StatusOr<std::shared_ptr<grpc::Channel>> WaitForServing(const std::string& target, double seconds) {
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::string last = "no answer";
  while (true) {
    std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    if (status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING) return channel;
    last =
        status.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) : DescribeGrpcStatus(status);
    if (Clock::now() >= deadline) {
      return absl::UnavailableError(absl::StrCat("the server was not ready within ", seconds, " s (", last, ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace bitfleet::tools

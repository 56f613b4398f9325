#include "tools/commands/grpc_client.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/read_file.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace bitfleet::tools {

using Clock = std::chrono::steady_clock;

void AddClientSecurityFlags(CLI::App& cmd, ClientSecurity* security) {
  if (const char* env = std::getenv("BITFLEET_API_KEY")) security->api_key = env;
  cmd.add_option("--api-key", security->api_key,
                 "API key for a server started with --api-keys (default: $BITFLEET_API_KEY, which keeps it out of ps)");
  AddClientTlsFlags(cmd, security);
}

void AddClientTlsFlags(CLI::App& cmd, ClientSecurity* security) {
  cmd.add_option("--tls-ca", security->ca_file, "Connect with TLS; the server's certificate must chain to these PEM CAs")
      ->check(CLI::ExistingFile);
  auto* cert = cmd.add_option("--tls-cert", security->cert_file,
                              "PEM client certificate, for a server that requires one (--tls-client-ca)")
                   ->check(CLI::ExistingFile);
  auto* key = cmd.add_option("--tls-key", security->key_file, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
}

StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(const ClientSecurity& security) {
  if (security.ca_file.empty() && security.cert_file.empty()) return grpc::InsecureChannelCredentials();
  if (security.ca_file.empty()) return absl::InvalidArgumentError("--tls-cert needs --tls-ca (the server's CA)");
  grpc::SslCredentialsOptions options;
  BF_ASSIGN_OR_RETURN(options.pem_root_certs, ReadFileToString(security.ca_file));
  if (!security.cert_file.empty()) {
    BF_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadFileToString(security.cert_file));
    BF_ASSIGN_OR_RETURN(options.pem_private_key, ReadFileToString(security.key_file));
  }
  return grpc::SslCredentials(options);
}

void AddApiKey(grpc::ClientContext& context, const ClientSecurity& security) {
  if (!security.api_key.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", security.api_key));
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

StatusOr<std::shared_ptr<grpc::Channel>> WaitForServing(const std::string& target, double seconds,
                                                        const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::string last = "no answer";
  while (true) {
    std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(target, credentials);
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

StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target, const ClientSecurity& security,
                                                     double wait_ready_s) {
  BF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials, ChannelCredentialsFor(security));
  if (wait_ready_s > 0) return WaitForServing(target, wait_ready_s, credentials);
  return grpc::CreateChannel(target, credentials);
}

}  // namespace bitfleet::tools

// Helpers shared by the gRPC client commands (`generate`, `bench serve`).
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "core/status.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/status.h"

namespace bitfleet::tools {

// How a client command reaches a server started with --api-keys or --tls-cert.
struct ClientSecurity {
  std::string api_key;    // sent as "authorization: Bearer <key>"; "": none
  std::string ca_file;    // set: TLS; the server's certificate must chain to these PEM CAs
  std::string cert_file;  // client certificate and key, for a server with --tls-client-ca
  std::string key_file;
};
// --api-key (default $BITFLEET_API_KEY: a key on the command line shows in `ps`) and the TLS
// flags below.
void AddClientSecurityFlags(CLI::App& cmd, ClientSecurity* security);
// --tls-ca, --tls-cert, --tls-key only (`health`, which needs no key).
void AddClientTlsFlags(CLI::App& cmd, ClientSecurity* security);
// Plaintext, or TLS with the given files (INVALID_ARGUMENT / NOT_FOUND for unusable files).
StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(const ClientSecurity& security);
// Adds "authorization: Bearer <api_key>" to a call; nothing without a key.
void AddApiKey(grpc::ClientContext& context, const ClientSecurity& security);

// "CODE_NAME: message" for a gRPC status.
std::string DescribeGrpcStatus(const grpc::Status& status);

// Polls grpc.health.v1 until the server reports SERVING or `seconds` pass; returns the channel
// that got the answer. Each attempt uses a fresh channel: one whose first connects were refused
// (the server still starting) can stay in gRPC's reconnect backoff for seconds after the port
// opens. UNAVAILABLE naming the last answer on timeout.
StatusOr<std::shared_ptr<grpc::Channel>> WaitForServing(const std::string& target, double seconds,
                                                        const std::shared_ptr<grpc::ChannelCredentials>& credentials);
// A channel to `target` with `security`'s credentials; with wait_ready_s > 0, once the server
// reports SERVING (WaitForServing).
StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target, const ClientSecurity& security,
                                                     double wait_ready_s);

}  // namespace bitfleet::tools

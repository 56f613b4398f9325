// Helpers shared by the gRPC client commands (`generate`, `bench serve`).
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "core/status.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace bitfleet::tools {

// --api-key KEY, defaulting to $BITFLEET_API_KEY (a key on the command line shows in `ps`).
void AddApiKeyFlag(CLI::App& cmd, std::string* api_key);
// Adds "authorization: Bearer <api_key>" to a call; nothing when `api_key` is empty.
void AddApiKey(grpc::ClientContext& context, const std::string& api_key);

// "CODE_NAME: message" for a gRPC status.
std::string DescribeGrpcStatus(const grpc::Status& status);

// Polls grpc.health.v1 until the server reports SERVING or `seconds` pass; returns the channel
// that got the answer. Each attempt uses a fresh channel: one whose first connects were refused
// (the server still starting) can stay in gRPC's reconnect backoff for seconds after the port
// opens. UNAVAILABLE naming the last answer on timeout.
StatusOr<std::shared_ptr<grpc::Channel>> WaitForServing(const std::string& target, double seconds);

}  // namespace bitfleet::tools

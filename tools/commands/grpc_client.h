// Helpers shared by the gRPC client commands (`generate`, `bench serve`).
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace bitfleet::tools {

// "CODE_NAME: message" for a gRPC status.
std::string DescribeGrpcStatus(const grpc::Status& status);

// Polls grpc.health.v1 until the server reports SERVING or `seconds` pass; returns the channel
// that got the answer. Each attempt uses a fresh channel: one whose first connects were refused
// (the server still starting) can stay in gRPC's reconnect backoff for seconds after the port
// opens. UNAVAILABLE naming the last answer on timeout.
StatusOr<std::shared_ptr<grpc::Channel>> WaitForServing(const std::string& target, double seconds);

}  // namespace bitfleet::tools

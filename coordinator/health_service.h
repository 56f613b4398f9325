// grpc.health.v1.Health of the client API, over statuses the coordinator sets.
//
// gRPC's default health service answers SERVING for the server-wide name "" from the moment
// the server starts listening, until the owner first sets it: a readiness probe that lands in
// that window marks a server with no worker yet ready (the coordinator set NOT_SERVING right
// after starting, and a probe still slipped in before it in CI). Here every name the
// coordinator publishes starts NOT_SERVING, before the port listens.
//
// Check: the status of the named service, NOT_FOUND for a name never published. Watch: the
// status now (SERVICE_UNKNOWN for an unknown name), then every change, until the client
// cancels or Shutdown, which sends NOT_SERVING and ends every watch.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace bitfleet::coordinator {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  // Publishes `names`, all NOT_SERVING.
  explicit HealthService(const std::vector<std::string>& names);

  // Sets a published name's status; an unknown name is ignored.
  void Set(const std::string& name, bool serving);
  // Every name NOT_SERVING from now on, whatever Set says; ends the watches.
  void Shutdown();

  grpc::Status Check(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;
  ServingStatus StatusLocked(const std::string& name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, bool> serving_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;  // bumped on every change, for the watches
};

}  // namespace bitfleet::coordinator

#include "coordinator/health_service.h"

#include "absl/time/time.h"

namespace bitfleet::coordinator {

namespace {

using grpc::health::v1::HealthCheckResponse;

// How often a watch looks whether its client has gone (a cancelled call does not wake the
// condition it waits on).
constexpr absl::Duration kWatchPoll = absl::Milliseconds(200);

}  // namespace

HealthService::HealthService(const std::vector<std::string>& names) {
  for (const std::string& name : names) serving_[name] = false;
}

void HealthService::Set(const std::string& name, bool serving) {
  absl::MutexLock lock(&mu_);
  auto it = serving_.find(name);
  if (it == serving_.end() || it->second == serving) return;
  it->second = serving;
  ++version_;
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  ++version_;
}

HealthService::ServingStatus HealthService::StatusLocked(const std::string& name) const {
  auto it = serving_.find(name);
  if (it == serving_.end()) return HealthCheckResponse::SERVICE_UNKNOWN;
  return it->second && !shut_down_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

grpc::Status HealthService::Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest* request,
                                  HealthCheckResponse* response) {
  absl::ReaderMutexLock lock(&mu_);
  const ServingStatus status = StatusLocked(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
  }
  response->set_status(status);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::ServerWriter<HealthCheckResponse>* writer) {
  ServingStatus sent = HealthCheckResponse::UNKNOWN;
  absl::MutexLock lock(&mu_);
  while (true) {
    // The version this status belongs to: a change made while the lock is released for the
    // write below is then still seen as one.
    const uint64_t seen = version_;
    const ServingStatus now = StatusLocked(request->service());
    if (now != sent) {
      HealthCheckResponse response;
      response.set_status(now);
      sent = now;
      mu_.Unlock();  // no lock held across a write to a slow client
      const bool written = writer->Write(response);
      mu_.Lock();
      if (!written) return grpc::Status::OK;  // the client went away
      continue;  // look again: the status may have changed during the write
    }
    if (shut_down_) return grpc::Status::OK;  // and NOT_SERVING, computed after it, was sent
    const auto changed = [this, seen]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return version_ != seen; };
    while (!context->IsCancelled() && !mu_.AwaitWithTimeout(absl::Condition(&changed), kWatchPoll)) {
    }
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
  }
}

}  // namespace bitfleet::coordinator

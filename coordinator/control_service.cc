#include "coordinator/control_service.h"

#include <algorithm>
#include <limits>

#include <utility>

#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "sharding/nccl_id.h"

namespace bitfleet::coordinator {

ControlService::ControlService(ControlServiceOptions options, ReplicaObserver* observer)
    : options_(std::move(options)), observer_(observer), nccl_relay_(options_.replicas, options_.tensor_parallel) {
  for (int r = 0; r < options_.replicas; ++r) {
    replicas_.push_back(
        std::make_unique<RemoteReplica>(r, options_.tensor_parallel, options_.timing, [this, r](const Status& reason) {
          if (observer_ != nullptr) observer_->OnReplicaDown(r, reason);
        }));
  }
}

ControlService::~ControlService() { Stop(); }

void ControlService::Start() {
  std::lock_guard lock(monitor_mu_);
  if (monitor_.joinable()) return;
  monitor_stop_ = false;
  monitor_ = std::thread([this] { MonitorLoop(); });
}

void ControlService::Stop() {
  nccl_relay_.Close();
  {
    std::lock_guard lock(monitor_mu_);
    monitor_stop_ = true;
  }
  monitor_cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
}

void ControlService::MonitorLoop() {
  std::unique_lock lock(monitor_mu_);
  while (!monitor_cv_.wait_for(lock, options_.timing.heartbeat_interval, [this] { return monitor_stop_; })) {
    lock.unlock();
    for (const auto& replica : replicas_) {
      if (auto incarnation = replica->current()) incarnation->Tick();
    }
    lock.lock();
  }
}

void ControlService::ShutdownWorkers(const std::string& reason) {
  shutting_down_.store(true);
  nccl_relay_.Close();
  for (const auto& replica : replicas_) {
    if (auto incarnation = replica->current()) incarnation->Shutdown(reason);
  }
}

std::vector<Executor*> ControlService::executors() const {
  std::vector<Executor*> out;
  for (const auto& replica : replicas_) out.push_back(replica.get());
  return out;
}

bool ControlService::replica_healthy(int replica) const {
  return replica >= 0 && replica < static_cast<int>(replicas_.size()) &&
         replicas_[replica]->ready_incarnation() != nullptr;
}

int ControlService::healthy_replicas() const {
  int n = 0;
  for (int r = 0; r < static_cast<int>(replicas_.size()); ++r) n += replica_healthy(r);
  return n;
}

Status ControlService::CheckRegistration(const v1::Register& r) const {
  if (r.world_size() != options_.tensor_parallel) {
    return absl::InvalidArgumentError(absl::StrCat("worker has world size ", r.world_size(),
                                                   "; this coordinator runs tensor parallel ",
                                                   options_.tensor_parallel));
  }
  if (r.replica() < 0 || r.replica() >= options_.replicas) {
    return absl::InvalidArgumentError(absl::StrCat("replica ", r.replica(), " outside [0, ", options_.replicas, ")"));
  }
  if (r.rank() < 0 || r.rank() >= r.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", r.rank(), " outside [0, ", r.world_size(), ")"));
  }
  if (!google::protobuf::util::MessageDifferencer::Equals(r.model(), options_.model)) {
    return absl::FailedPreconditionError(absl::StrCat("worker loaded a different model: {",
                                                      r.model().ShortDebugString(), "}; expected {",
                                                      options_.model.ShortDebugString(), "}"));
  }
  const v1::Capacity& c = r.capacity();
  const WorkerCapacity& need = options_.required;
  auto too_small = [](const char* what, int32_t have, int32_t want) {
    return absl::FailedPreconditionError(absl::StrCat("worker capacity ", what, " ", have, " < required ", want));
  };
  if (c.kv_block_size() <= 0 || (need.kv_block_size > 0 && c.kv_block_size() != need.kv_block_size)) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker KV block size ", c.kv_block_size(), "; this coordinator uses ", need.kv_block_size));
  }
  if (c.kv_blocks() <= 0 || c.kv_blocks() < need.kv_blocks)
    return too_small("kv_blocks", c.kv_blocks(), need.kv_blocks);
  if (c.max_step_tokens() <= 0 || c.max_step_tokens() < need.max_step_tokens) {
    return too_small("max_step_tokens", c.max_step_tokens(), need.max_step_tokens);
  }
  if (c.max_step_sequences() <= 0 || c.max_step_sequences() < need.max_step_sequences) {
    return too_small("max_step_sequences", c.max_step_sequences(), need.max_step_sequences);
  }
  if (c.max_context() <= 0 || c.max_context() < need.max_context) {
    return too_small("max_context", c.max_context(), need.max_context);
  }
  return absl::OkStatus();
}

grpc::Status ControlService::Connect(grpc::ServerContext* context,
                                     grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  auto log = Logger("control");
  v1::WorkerMessage first;
  if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended before Register");
  if (!first.has_registration()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be a Register");
  }
  const v1::Register& registration = first.registration();
  const std::string who =
      absl::StrCat("replica ", registration.replica(), " rank ", registration.rank(), "/", registration.world_size(),
                   " (", registration.host(), " pid ", registration.pid(), ", ", context->peer(), ")");
  if (Status s = CheckRegistration(registration); !s.ok()) {
    log->error("refused worker {}: {}", who, std::string(s.message()));
    return ToGrpcStatus(s);
  }
  if (shutting_down_.load()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
  }
  StatusOr<std::shared_ptr<GrpcExecutor>> incarnation = replicas_[registration.replica()]->JoinIncarnation();
  if (!incarnation.ok()) {
    log->warn("worker {} must retry: {}", who, std::string(incarnation.status().message()));
    return ToGrpcStatus(incarnation.status());
  }
  std::shared_ptr<GrpcExecutor> executor = *std::move(incarnation);
  v1::CoordinatorMessage reply;
  reply.mutable_registered()->set_heartbeat_interval_ms(
      static_cast<uint32_t>(options_.timing.heartbeat_interval.count()));
  reply.mutable_registered()->set_heartbeat_timeout_ms(
      static_cast<uint32_t>(options_.timing.heartbeat_timeout.count()));
  reply.mutable_registered()->set_step_timeout_ms(static_cast<uint32_t>(
      std::min<int64_t>(options_.timing.step_timeout.count(), std::numeric_limits<uint32_t>::max())));
  StatusOr<bool> completed = executor->Attach(registration.rank(), registration, reply, context, stream);
  if (!completed.ok()) {
    log->error("refused worker {}: {}", who, std::string(completed.status().message()));
    return ToGrpcStatus(completed.status());
  }
  const v1::Capacity& c = registration.capacity();
  log->info("worker registered: {}; kv {} blocks x {}, step {} tokens / {} sequences, context {}, kernels {}", who,
            c.kv_blocks(), c.kv_block_size(), c.max_step_tokens(), c.max_step_sequences(), c.max_context(),
            registration.kernel_variant());
  if (*completed) {
    log->info("replica {} ready ({} ranks)", registration.replica(), options_.tensor_parallel);
    if (observer_ != nullptr) observer_->OnReplicaReady(registration.replica());
  }
  const Status end = executor->ServeRank(registration.rank());
  log->info("worker disconnected: {}: {}", who, end.ok() ? "OK" : std::string(end.message()));
  return ToGrpcStatus(end);
}

grpc::Status ControlService::ExchangeNcclId(grpc::ServerContext* context, const v1::NcclIdRequest* request,
                                            v1::NcclIdReply* reply) {
  auto log = Logger("control");
  const std::string who = absl::StrCat("replica ", request->replica(), " rank ", request->rank(), "/",
                                       request->world_size(), " (", context->peer(), ")");
  if (request->world_size() != options_.tensor_parallel) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("world size ", request->world_size(), "; this coordinator runs tensor parallel ",
                                     options_.tensor_parallel));
  }
  if (request->rank() < 0 || request->rank() >= request->world_size()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("rank ", request->rank(), " outside [0, ", request->world_size(), ")"));
  }
  if (request->rank() == 0) {
    if (request->unique_id().size() != sharding::kNcclUniqueIdBytes) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("rank 0 must post an NCCL unique id of ", sharding::kNcclUniqueIdBytes, " bytes, got ",
                                       request->unique_id().size()));
    }
    if (shutting_down_.load()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    if (Status s = nccl_relay_.Post(request->replica(), request->unique_id()); !s.ok()) return ToGrpcStatus(s);
    log->info("NCCL id posted by {}", who);
    return grpc::Status::OK;
  }
  if (!request->unique_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "only rank 0 posts an NCCL unique id");
  }
  // The client's deadline, capped (a call without one would otherwise hold a thread forever).
  const auto cap = NcclIdRelay::Clock::now() + kMaxNcclIdWait;
  const auto client_left = context->deadline() - std::chrono::system_clock::now();
  const auto deadline = client_left < kMaxNcclIdWait
                            ? NcclIdRelay::Clock::now() +
                                  std::chrono::duration_cast<NcclIdRelay::Clock::duration>(client_left)
                            : cap;
  StatusOr<std::string> id =
      nccl_relay_.Take(request->replica(), request->rank(), deadline, [context] { return context->IsCancelled(); });
  if (!id.ok()) {
    log->warn("NCCL id for {}: {}", who, std::string(id.status().message()));
    return ToGrpcStatus(id.status());
  }
  log->info("NCCL id handed to {}", who);
  reply->set_unique_id(*std::move(id));
  return grpc::Status::OK;
}

}  // namespace bitfleet::coordinator

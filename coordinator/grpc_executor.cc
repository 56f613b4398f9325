#include "coordinator/grpc_executor.h"

#include <algorithm>
#include <utility>

#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "grpcpp/server_context.h"

namespace bitfleet::coordinator {

struct GrpcExecutor::RankSlot {
  // Guarded by mu_.
  bool attached = false;                   // bound to a stream
  bool registered = false;                 // and its Registered reply went out
  grpc::ServerContext* context = nullptr;  // valid while attached; TryCancel is thread-safe
  Clock::time_point last_heard;
  std::optional<v1::StepResult> result;  // for the step in flight
  // Guarded by write_mu (one writer at a time; the reader is the rank's handler thread).
  std::mutex write_mu;
  ControlStream* stream = nullptr;
};

namespace {

// Plan rejections are deterministic on every rank and happen before any collective, so the
// group is still in step; every other step error leaves it in an unknown state.
bool IsPlanRejection(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kResourceExhausted;
}

int32_t MinPositive(int32_t a, int32_t b) { return a == 0 ? b : std::min(a, b); }

}  // namespace

GrpcExecutor::GrpcExecutor(int replica, int world_size, ControlTiming timing)
    : replica_(replica), world_size_(world_size), timing_(timing) {
  slots_.reserve(world_size);
  for (int r = 0; r < world_size; ++r) slots_.push_back(std::make_unique<RankSlot>());
}

GrpcExecutor::~GrpcExecutor() = default;

int32_t GrpcExecutor::kv_blocks() const { return capacity().kv_blocks; }
int32_t GrpcExecutor::kv_block_size() const { return capacity().kv_block_size; }
int32_t GrpcExecutor::max_step_tokens() const { return capacity().max_step_tokens; }
int32_t GrpcExecutor::max_step_sequences() const { return capacity().max_step_sequences; }
int32_t GrpcExecutor::max_logit_rows() const {
  const WorkerCapacity c = capacity();
  return std::max(c.max_logit_rows, c.max_step_sequences);
}
int32_t GrpcExecutor::max_draft_tokens() const { return std::max(capacity().max_draft_tokens, 0); }

WorkerCapacity GrpcExecutor::capacity() const {
  std::lock_guard lock(mu_);
  return ready_ ? capacity_ : WorkerCapacity{};
}

bool GrpcExecutor::healthy() const {
  std::lock_guard lock(mu_);
  return ready_ && !failed_;
}

bool GrpcExecutor::ready() const {
  std::lock_guard lock(mu_);
  return ready_;
}

bool GrpcExecutor::failed() const {
  std::lock_guard lock(mu_);
  return failed_;
}

Status GrpcExecutor::failure() const {
  std::lock_guard lock(mu_);
  return failure_;
}

bool GrpcExecutor::fully_detached() const {
  std::lock_guard lock(mu_);
  return std::none_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->attached; });
}

StatusOr<bool> GrpcExecutor::Attach(int rank, const v1::Register& registration, const v1::CoordinatorMessage& reply,
                                    grpc::ServerContext* context, ControlStream* stream) {
  if (rank < 0 || rank >= world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " outside [0, ", world_size_, ")"));
  }
  RankSlot& slot = *slots_[rank];
  {
    std::lock_guard lock(mu_);
    if (failed_) {
      return absl::UnavailableError(absl::StrCat("replica ", replica_, " failed (", std::string(failure_.message()),
                                                 "); retry once its other ranks have disconnected"));
    }
    if (slot.attached) {
      return absl::AlreadyExistsError(absl::StrCat("rank ", rank, " of replica ", replica_, " is already connected"));
    }
    slot.attached = true;
    slot.context = context;
    slot.last_heard = Clock::now();
  }
  {
    std::lock_guard lock(slot.write_mu);
    slot.stream = stream;
  }
  // The reply goes out before the replica can turn ready, so no plan can overtake it.
  if (!Send(rank, reply)) {
    Detach(rank);
    return absl::UnavailableError("the worker's stream broke before registration finished");
  }
  std::lock_guard lock(mu_);
  const v1::Capacity& c = registration.capacity();
  capacity_.kv_blocks = MinPositive(capacity_.kv_blocks, c.kv_blocks());
  capacity_.kv_block_size = c.kv_block_size();  // equal on every rank (checked by the service)
  capacity_.max_step_tokens = MinPositive(capacity_.max_step_tokens, c.max_step_tokens());
  capacity_.max_step_sequences = MinPositive(capacity_.max_step_sequences, c.max_step_sequences());
  capacity_.max_context = MinPositive(capacity_.max_context, c.max_context());
  // 0 from a worker that predates the field: its rows are its sequences.
  capacity_.max_logit_rows =
      MinPositive(capacity_.max_logit_rows, c.max_logit_rows() > 0 ? c.max_logit_rows() : c.max_step_sequences());
  // 0 from a worker that predates the field (or any rank that takes none): no drafts at all.
  const int32_t drafts = std::max(c.max_draft_tokens(), 0);
  capacity_.max_draft_tokens = capacity_.max_draft_tokens < 0 ? drafts : std::min(capacity_.max_draft_tokens, drafts);
  slot.registered = true;
  const bool all = std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->registered; });
  if (all && !ready_ && !failed_) {
    ready_ = true;
    return true;
  }
  return false;
}

Status GrpcExecutor::ServeRank(int rank) {
  RankSlot& slot = *slots_[rank];
  ControlStream* stream = nullptr;
  {
    std::lock_guard lock(slot.write_mu);
    stream = slot.stream;  // only this thread reads from it
  }
  Status end = absl::OkStatus();
  v1::WorkerMessage message;
  bool broken = false;
  while (stream != nullptr && !broken) {
    if (!stream->Read(&message)) break;
    {
      std::lock_guard lock(mu_);
      slot.last_heard = Clock::now();
    }
    switch (message.kind_case()) {
      case v1::WorkerMessage::kResult:
        end = OnResult(rank, std::move(*message.mutable_result()));
        broken = !end.ok();
        break;
      case v1::WorkerMessage::kHeartbeat:
        break;
      default:
        end = absl::InvalidArgumentError(absl::StrCat("rank ", rank, " sent an unexpected message (kind ",
                                                      static_cast<int>(message.kind_case()), ")"));
        broken = true;
        break;
    }
  }
  if (end.ok()) {
    bool expected = false;
    {
      std::lock_guard lock(mu_);
      expected = shutting_down_ || failed_;
      if (failed_) end = absl::UnavailableError(std::string(failure_.message()));
    }
    if (!expected) {
      end = absl::UnavailableError(absl::StrCat("rank ", rank, " of replica ", replica_, " disconnected"));
    }
  }
  Fail(end.ok() ? absl::UnavailableError("worker shut down") : end);
  Detach(rank);
  return end;
}

Status GrpcExecutor::OnResult(int rank, v1::StepResult result) {
  std::lock_guard lock(mu_);
  if (!step_in_flight_ || result.step_id() != *step_in_flight_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " answered step ", result.step_id(), " but no such step is in flight"));
  }
  RankSlot& slot = *slots_[rank];
  if (slot.result) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " answered step ", result.step_id(), " twice"));
  }
  slot.result = std::move(result);
  cv_.notify_all();
  return absl::OkStatus();
}

StatusOr<StepResult> GrpcExecutor::Execute(const StepPlan& plan) {
  {
    std::lock_guard lock(mu_);
    if (!ready_ || failed_) {
      return absl::UnavailableError(absl::StrCat("replica ", replica_, " is not ready",
                                                 failed_ ? absl::StrCat(": ", std::string(failure_.message())) : ""));
    }
    step_in_flight_ = plan.step_id;
    last_step_sent_ = plan.step_id;
    for (auto& slot : slots_) slot->result.reset();
  }
  v1::CoordinatorMessage message;
  ToProto(plan, message.mutable_plan());
  for (int r = 0; r < world_size_; ++r) {
    if (!Send(r, message)) {
      Fail(absl::UnavailableError(absl::StrCat("rank ", r, " of replica ", replica_, ": sending the plan failed")));
      break;
    }
  }
  std::unique_lock lock(mu_);
  const Clock::time_point deadline = Clock::now() + timing_.step_timeout;
  cv_.wait_until(lock, deadline, [&] {
    return failed_ || std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->result.has_value(); });
  });
  // Every rank answered: their answers say best what happened, even when the replica failed
  // right after (a rank that reports a broken group then disconnects).
  const bool all_answered =
      std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->result.has_value(); });
  StatusOr<StepResult> outcome = absl::UnavailableError("unreachable");
  if (all_answered) {
    outcome = CollectLocked(plan);
  } else if (failed_) {
    outcome = absl::UnavailableError(std::string(failure_.message()));
  } else {
    outcome = absl::UnavailableError(absl::StrCat("replica ", replica_, ": step ", plan.step_id, " took longer than ",
                                                  timing_.step_timeout.count(), " ms"));
  }
  step_in_flight_.reset();
  lock.unlock();
  // A replica-level failure found by CollectLocked (or the timeout) still has to be declared.
  if (!outcome.ok() && outcome.status().code() == absl::StatusCode::kUnavailable) Fail(outcome.status());
  return outcome;
}

StatusOr<StepResult> GrpcExecutor::CollectLocked(const StepPlan& plan) {
  // Any rank's non-rejection error fails the replica; otherwise the first rejection wins.
  Status rejection = absl::OkStatus();
  for (int r = 0; r < world_size_; ++r) {
    const Status s = StatusOfResult(*slots_[r]->result);
    if (s.ok()) continue;
    if (!IsPlanRejection(s.code())) {
      return absl::UnavailableError(
          absl::StrCat("rank ", r, " of replica ", replica_, " failed step ", plan.step_id, ": ", s.ToString()));
    }
    if (rejection.ok()) rejection = s;
  }
  if (!rejection.ok()) return rejection;
  StepResult result = FromProto(*slots_[0]->result);
  if (result.sequences.size() != plan.sequences.size()) {
    return absl::UnavailableError(absl::StrCat("replica ", replica_, ": step ", plan.step_id, " answered ",
                                               result.sequences.size(), " sequences for ", plan.sequences.size()));
  }
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    if (result.sequences[i].sequence_id != plan.sequences[i].sequence_id) {
      return absl::UnavailableError(
          absl::StrCat("replica ", replica_, ": step ", plan.step_id, " answered out of order at sequence ", i));
    }
  }
  for (int r = 1; r < world_size_; ++r) {
    const v1::StepResult& other = *slots_[r]->result;
    bool same = other.sequences_size() == static_cast<int>(result.sequences.size());
    for (int i = 0; same && i < other.sequences_size(); ++i)
      same = other.sequences(i).token() == result.sequences[i].token;
    if (!same) {
      // Ranks must sample identically (sampling is reduced across the group): a divergence is a
      // bug, and continuing would let the ranks' KV caches drift apart.
      return absl::UnavailableError(absl::StrCat("replica ", replica_, ": rank ", r,
                                                 " sampled different tokens than rank 0 in step ", plan.step_id));
    }
  }
  return result;
}

bool GrpcExecutor::Send(int rank, const v1::CoordinatorMessage& message) {
  RankSlot& slot = *slots_[rank];
  std::lock_guard lock(slot.write_mu);
  return slot.stream != nullptr && slot.stream->Write(message);
}

bool GrpcExecutor::SendIfIdle(int rank, const v1::CoordinatorMessage& message) {
  RankSlot& slot = *slots_[rank];
  std::unique_lock lock(slot.write_mu, std::try_to_lock);
  return lock.owns_lock() && slot.stream != nullptr && slot.stream->Write(message);
}

void GrpcExecutor::Tick() {
  std::vector<int> attached;
  Status silent = absl::OkStatus();
  uint64_t last_step = 0;
  {
    std::lock_guard lock(mu_);
    if (failed_) return;
    const Clock::time_point now = Clock::now();
    for (int r = 0; r < world_size_; ++r) {
      if (!slots_[r]->attached) continue;
      attached.push_back(r);
      const auto quiet = std::chrono::duration_cast<std::chrono::milliseconds>(now - slots_[r]->last_heard);
      if (quiet > timing_.heartbeat_timeout && silent.ok()) {
        silent =
            absl::UnavailableError(absl::StrCat("rank ", r, " of replica ", replica_, " silent for ", quiet.count(),
                                                " ms (heartbeat timeout ", timing_.heartbeat_timeout.count(), " ms)"));
      }
    }
    last_step = last_step_sent_;
  }
  if (!silent.ok()) {
    Fail(silent);
    return;
  }
  v1::CoordinatorMessage heartbeat;
  heartbeat.mutable_heartbeat()->set_last_step_id(last_step);
  // Skipped for a rank whose stream is busy with a plan: that write may block for as long as the
  // rank does not read (a frozen process), and waiting behind it would stall this monitor thread,
  // which checks the silence above and heartbeats every replica. A failed write surfaces as the
  // stream's end.
  for (int r : attached) SendIfIdle(r, heartbeat);
}

void GrpcExecutor::Fail(const Status& reason) {
  bool expected = false;
  {
    std::lock_guard lock(mu_);
    if (failed_) return;
    failed_ = true;
    failure_ = reason;
    expected = shutting_down_;
    // After Shutdown the other ranks are exiting on their own: let them read it and leave.
    for (auto& slot : slots_) {
      if (slot->context != nullptr && !expected) slot->context->TryCancel();
    }
    cv_.notify_all();
  }
  if (expected) {
    Logger("control")->info("replica {} stopped: {}", replica_, std::string(reason.message()));
  } else {
    Logger("control")->error("replica {} failed: {}", replica_, std::string(reason.message()));
  }
  if (on_failure_) on_failure_(reason);
}

void GrpcExecutor::Shutdown(const std::string& reason) {
  {
    std::lock_guard lock(mu_);
    shutting_down_ = true;
  }
  v1::CoordinatorMessage message;
  message.mutable_shutdown()->set_reason(reason);
  for (int r = 0; r < world_size_; ++r) Send(r, message);
}

void GrpcExecutor::Detach(int rank) {
  RankSlot& slot = *slots_[rank];
  {
    std::lock_guard lock(mu_);
    // Cancelling first aborts a write that another thread may be blocked in.
    if (slot.context != nullptr) slot.context->TryCancel();
  }
  {
    std::lock_guard lock(slot.write_mu);
    slot.stream = nullptr;
  }
  std::lock_guard lock(mu_);
  slot.attached = false;
  slot.registered = false;
  slot.context = nullptr;
  cv_.notify_all();
}

}  // namespace bitfleet::coordinator

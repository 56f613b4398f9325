#include "coordinator/remote_replica.h"

#include <utility>

namespace bitfleet::coordinator {

RemoteReplica::RemoteReplica(int replica, int world_size, ControlTiming timing,
                             std::function<void(const Status&)> on_down)
    : replica_(replica), world_size_(world_size), timing_(timing), on_down_(std::move(on_down)) {}

bool RemoteReplica::TakeUnseenFailureLocked() const {
  const bool unseen = failure_unseen_;
  failure_unseen_ = false;
  return unseen;
}

StatusOr<StepResult> RemoteReplica::Execute(const StepPlan& plan) {
  std::shared_ptr<GrpcExecutor> executor;
  {
    std::lock_guard lock(mu_);
    if (TakeUnseenFailureLocked()) {
      return absl::UnavailableError(absl::StrCat("replica ", replica_, " failed and restarted since the last step"));
    }
    executor = current_;
  }
  if (executor == nullptr) return absl::UnavailableError(absl::StrCat("replica ", replica_, " has no workers"));
  return executor->Execute(plan);
}

int32_t RemoteReplica::kv_blocks() const {
  auto e = current();
  return e ? e->kv_blocks() : 0;
}
int32_t RemoteReplica::kv_block_size() const {
  auto e = current();
  return e ? e->kv_block_size() : 0;
}
int32_t RemoteReplica::max_step_tokens() const {
  auto e = current();
  return e ? e->max_step_tokens() : 0;
}
int32_t RemoteReplica::max_step_sequences() const {
  auto e = current();
  return e ? e->max_step_sequences() : 0;
}
int32_t RemoteReplica::max_draft_tokens() const {
  auto e = current();
  return e ? e->max_draft_tokens() : 0;
}

int32_t RemoteReplica::max_logit_rows() const {
  auto e = current();
  return e ? e->max_logit_rows() : 0;
}

bool RemoteReplica::healthy() const {
  std::shared_ptr<GrpcExecutor> executor;
  {
    std::lock_guard lock(mu_);
    if (TakeUnseenFailureLocked()) return false;
    executor = current_;
  }
  return executor != nullptr && executor->healthy();
}

std::shared_ptr<GrpcExecutor> RemoteReplica::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

std::shared_ptr<GrpcExecutor> RemoteReplica::ready_incarnation() const {
  auto e = current();
  return e != nullptr && e->healthy() ? e : nullptr;
}

StatusOr<std::shared_ptr<GrpcExecutor>> RemoteReplica::JoinIncarnation() {
  std::lock_guard lock(mu_);
  if (current_ != nullptr && current_->failed()) {
    if (!current_->fully_detached()) {
      return absl::UnavailableError(
          absl::StrCat("replica ", replica_, " is still tearing down its failed workers; retry"));
    }
    current_ = nullptr;
  }
  if (current_ == nullptr) {
    // The failure callback runs on whichever thread fails the incarnation; it latches the
    // failure for the scheduler only if that incarnation is still the current one.
    auto incarnation = std::make_shared<GrpcExecutor>(replica_, world_size_, timing_);
    std::weak_ptr<GrpcExecutor> weak = incarnation;
    incarnation->set_on_failure([this, weak](const Status& reason) {
      {
        std::lock_guard lock(mu_);
        if (current_ == weak.lock()) failure_unseen_ = true;
      }
      if (on_down_) on_down_(reason);
    });
    current_ = std::move(incarnation);
    ++incarnations_;
  }
  return current_;
}

uint64_t RemoteReplica::incarnation() const {
  std::lock_guard lock(mu_);
  return incarnations_;
}

}  // namespace bitfleet::coordinator

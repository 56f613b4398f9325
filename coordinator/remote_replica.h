// The scheduler's stable Executor for one replica slot whose ranks are remote workers.
//
// A replica's worker group comes and goes: each time all its ranks register, a new
// GrpcExecutor incarnation serves it, and a failure ends that incarnation for good (its KV
// storage is gone with the workers). The scheduler, though, holds one Executor per replica for
// its whole life and learns about restarts by polling healthy(). RemoteReplica bridges the two
// and guarantees the scheduler cannot miss a restart, however quickly it happens: after every
// failure, either the next healthy() returns false or the next Execute() fails with
// UNAVAILABLE — whichever comes first — before a new incarnation is used. The scheduler then
// forgets the replica's KV metadata (executor.h), so no stale block is ever read.
//
// That guarantee holds for one poller: only the scheduler may call healthy() (others use
// ready_incarnation()).
//
// Thread-safety: all methods are thread-safe; Execute from one thread at a time.
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include "coordinator/executor.h"
#include "coordinator/grpc_executor.h"
#include "core/status.h"

namespace bitfleet::coordinator {

class RemoteReplica final : public Executor {
 public:
  // `on_down` runs once per failed incarnation, with no lock held (see GrpcExecutor).
  RemoteReplica(int replica, int world_size, ControlTiming timing, std::function<void(const Status&)> on_down);

  // Executor: forwards to the current incarnation (UNAVAILABLE when there is none).
  StatusOr<StepResult> Execute(const StepPlan& plan) override;
  int32_t kv_blocks() const override;
  int32_t kv_block_size() const override;
  int32_t max_step_tokens() const override;
  int32_t max_step_sequences() const override;
  int32_t max_logit_rows() const override;
  int32_t max_draft_tokens() const override;
  bool healthy() const override;
  // Counts the incarnations created so far: the scheduler also forgets the replica's KV
  // metadata when it changes, a second guard beside the failure latch.
  uint64_t incarnation() const override;

  int replica() const { return replica_; }
  // The incarnation a registering rank joins: the current one, or a new one when the current
  // has failed and all its ranks are gone. UNAVAILABLE while a failed one still has ranks.
  StatusOr<std::shared_ptr<GrpcExecutor>> JoinIncarnation();
  // The current incarnation when it is healthy, else null (for health reporting).
  std::shared_ptr<GrpcExecutor> ready_incarnation() const;
  // The current incarnation, whatever its state (null before the first registration).
  std::shared_ptr<GrpcExecutor> current() const;

 private:
  // Reports and clears an unseen failure (mu_ held).
  bool TakeUnseenFailureLocked() const;

  const int replica_;
  const int world_size_;
  const ControlTiming timing_;
  const std::function<void(const Status&)> on_down_;

  mutable std::mutex mu_;
  std::shared_ptr<GrpcExecutor> current_;
  uint64_t incarnations_ = 0;
  mutable bool failure_unseen_ = false;
};

}  // namespace bitfleet::coordinator

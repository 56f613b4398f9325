// The Executor of one replica whose ranks are remote worker processes (DESIGN.md §3, §7).
//
// Each rank of the replica holds one long-lived Control.Connect stream to the coordinator
// (control.proto). The stream is served by a gRPC handler thread (control_service.cc), which
// Attach()es it here and then spends its life in ServeRank() reading the rank's messages.
// Execute() writes the same StepPlan to every rank, waits for every rank's StepResult and
// returns rank 0's (all ranks sample the same tokens: sampling is reduced across the group).
//
// Failure model: a TP group is one failure unit. The replica fails — permanently, for this
// object — when a rank's stream breaks, a rank is silent for longer than the heartbeat timeout,
// a step takes longer than the step timeout, a rank reports a step error other than a plan
// rejection, or a rank breaks the protocol. Failing cancels every rank's stream (the workers
// exit and their launcher restarts or tears down the group), wakes a waiting Execute, which
// returns UNAVAILABLE, and runs the on_failure callback once. A replaced group registers into a
// new GrpcExecutor (RemoteReplica, remote_replica.h, keeps one per incarnation and is what the
// scheduler holds), so KV state kept for the old incarnation is never mistaken for the new one's.
//
// Writes are blocking gRPC writes made by the caller's thread under a per-rank mutex. They do
// not stall in practice: a rank has at most one plan outstanding and heartbeats are a few
// bytes, far below the transport's flow-control window, and Fail() cancels the streams, which
// aborts any write in progress.
//
// Thread-safety: Execute from one thread at a time (the scheduler's); everything else from any
// thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bitfleet/v1/control.grpc.pb.h"
#include "coordinator/executor.h"
#include "core/status.h"

namespace bitfleet::coordinator {

// Liveness and step timing of the control plane.
struct ControlTiming {
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{5000};
  // Backstop for a step that never finishes although the ranks still heartbeat (collectives
  // have their own, shorter timeouts).
  std::chrono::milliseconds step_timeout{120000};
};

// What a replica can run: the minimum over its ranks' registrations.
struct WorkerCapacity {
  int32_t kv_blocks = 0;
  int32_t kv_block_size = 0;
  int32_t max_step_tokens = 0;
  int32_t max_step_sequences = 0;
  int32_t max_context = 0;
  int32_t max_logit_rows = 0;
  int32_t max_draft_tokens = -1;  // -1 until a rank registers; 0 if any rank takes no drafts
};

using ControlStream = grpc::ServerReaderWriterInterface<v1::CoordinatorMessage, v1::WorkerMessage>;

class GrpcExecutor final : public Executor {
 public:
  GrpcExecutor(int replica, int world_size, ControlTiming timing);
  ~GrpcExecutor() override;
  GrpcExecutor(const GrpcExecutor&) = delete;
  GrpcExecutor& operator=(const GrpcExecutor&) = delete;

  // Executor. UNAVAILABLE when the replica is not ready or fails during the step; the plan's
  // rejection (INVALID_ARGUMENT, RESOURCE_EXHAUSTED) as the ranks reported it.
  StatusOr<StepResult> Execute(const StepPlan& plan) override;
  int32_t kv_blocks() const override;
  int32_t kv_block_size() const override;
  int32_t max_step_tokens() const override;
  int32_t max_step_sequences() const override;
  int32_t max_logit_rows() const override;
  int32_t max_draft_tokens() const override;
  // Every rank attached and nothing failed.
  bool healthy() const override;

  // `on_failure` runs once, on whichever thread fails the replica, with no lock held. Set it
  // before the executor is shared with other threads.
  void set_on_failure(std::function<void(const Status&)> on_failure) { on_failure_ = std::move(on_failure); }

  int replica() const { return replica_; }
  int world_size() const { return world_size_; }
  // Valid once ready(); zeros before.
  WorkerCapacity capacity() const;
  // Every rank has attached (stays true after a failure).
  bool ready() const;
  bool failed() const;
  // Why the replica failed (OK while it has not).
  Status failure() const;
  // No rank is attached any more (a failed replica's slot can then take a new incarnation).
  bool fully_detached() const;

  // --- Control-service side ---

  // Binds `rank` to a Connect stream and sends `reply` on it before anything else. Returns true
  // when this attach completed the replica (exactly one caller sees true). ALREADY_EXISTS for a
  // rank that is attached, UNAVAILABLE when the replica has failed. On success the caller must
  // call ServeRank(rank) next, on the same thread, and keep `context` and `stream` alive until
  // it returns.
  StatusOr<bool> Attach(int rank, const v1::Register& registration, const v1::CoordinatorMessage& reply,
                        grpc::ServerContext* context, ControlStream* stream);
  // Reads the rank's messages until its stream ends or the replica fails, then detaches the
  // rank. Returns the status to end the stream with.
  Status ServeRank(int rank);
  // Sends a heartbeat to every attached rank and fails the replica when one has been silent for
  // longer than the heartbeat timeout. Called periodically (ControlService's monitor thread).
  void Tick();
  // Fails the replica with `reason` (first call wins; later calls do nothing).
  void Fail(const Status& reason);
  // Asks every attached rank to exit (drain finished). Their disconnects are then expected:
  // the replica still turns unhealthy, but logs say why.
  void Shutdown(const std::string& reason);

 private:
  using Clock = std::chrono::steady_clock;
  struct RankSlot;

  // Writes `message` to `rank`; false when the rank is not attached or the write failed.
  bool Send(int rank, const v1::CoordinatorMessage& message);
  // The same unless another write to `rank` is in progress (then false, nothing sent).
  bool SendIfIdle(int rank, const v1::CoordinatorMessage& message);
  // Stores a rank's result for the step in flight. Errors are protocol violations.
  Status OnResult(int rank, v1::StepResult result);
  void Detach(int rank);
  // Turns the ranks' results into the step's outcome (mu_ held).
  StatusOr<StepResult> CollectLocked(const StepPlan& plan);

  const int replica_;
  const int world_size_;
  const ControlTiming timing_;
  std::function<void(const Status&)> on_failure_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // a result arrived or the replica failed
  std::vector<std::unique_ptr<RankSlot>> slots_;
  bool ready_ = false;
  bool shutting_down_ = false;
  Status failure_;  // OK until the replica fails
  bool failed_ = false;
  WorkerCapacity capacity_;
  std::optional<uint64_t> step_in_flight_;
  uint64_t last_step_sent_ = 0;
};

}  // namespace bitfleet::coordinator

// An Executor over a StepRunner in this process: one replica of TP=1 (or one rank driving a
// runner whose peers are threads in this process). Used by the scheduler's tests and by a
// one-process serving mode. Links the worker (kernels), so it is a separate library from
// bitfleet_coordinator.
//
// A step that fails with anything but INVALID_ARGUMENT or RESOURCE_EXHAUSTED (a plan the
// runner refused before writing KV) failed the replica (executor.h): the executor reports
// unhealthy from then on. Nothing restarts a replica in this process, and its runner's state
// (a device after a sticky error) is not to be trusted; `serve --in-process` exits non-zero.
//
// A step still running past `step_timeout` (when given) makes the replica unhealthy too
// (stuck()): a step cannot be interrupted, so its caller must give up on the process.
//
// Fault injection for tests: set_healthy(false) takes the replica out of service (the scheduler
// fails its requests with UNAVAILABLE); FailNextSteps(n, status) makes the next n Execute calls
// return `status` without running (a failing status marks the replica unhealthy as above).
//
// Thread-safety: Execute from one thread at a time; everything else from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>

#include "coordinator/executor.h"
#include "core/status.h"
#include "worker/step_runner.h"
#include "worker/step_executor.h"

namespace bitfleet::coordinator {

class InProcessExecutor final : public Executor {
 public:
  // Takes ownership of the runner. `step_timeout` zero: no limit.
  explicit InProcessExecutor(std::unique_ptr<worker::StepRunner> runner,
                             std::chrono::milliseconds step_timeout = std::chrono::milliseconds(0));

  StatusOr<StepResult> Execute(const StepPlan& plan) override;
  int32_t kv_blocks() const override { return kv_blocks_; }
  int32_t kv_block_size() const override { return kv_block_size_; }
  int32_t max_step_tokens() const override { return max_step_tokens_; }
  // The runner's sequence limit, capped by its logit rows (every sequence gets one row).
  int32_t max_step_sequences() const override { return max_step_sequences_; }
  int32_t max_logit_rows() const override { return max_logit_rows_; }
  int32_t max_draft_tokens() const override { return kMaxDraftTokens; }
  bool healthy() const override { return healthy_.load() && !stuck(); }
  // True while a step has run longer than the step timeout.
  bool stuck() const;

  void set_healthy(bool healthy) { healthy_.store(healthy); }
  void FailNextSteps(int n, Status status);

  worker::StepRunner& runner() { return *runner_; }
  // Work done so far (read between steps).
  int64_t steps_executed() const { return steps_.load(); }
  int64_t tokens_executed() const { return tokens_.load(); }

 private:
  // FailNextSteps' status while it has failures left, else OK (an empty result).
  StatusOr<StepResult> NextInjectedFailure();

  std::unique_ptr<worker::StepRunner> runner_;
  worker::StepExecutor step_executor_;
  const int32_t kv_blocks_;
  const int32_t kv_block_size_;
  const int32_t max_step_tokens_;
  const int32_t max_step_sequences_;
  const int32_t max_logit_rows_;
  const std::chrono::milliseconds step_timeout_;
  // When the step in flight started (steady clock, nanoseconds since its epoch); 0 between steps.
  std::atomic<int64_t> step_started_ns_{0};
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> tokens_{0};
  std::mutex fault_mu_;
  int failures_left_ = 0;
  Status failure_;
};

}  // namespace bitfleet::coordinator

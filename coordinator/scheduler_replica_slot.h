// Scheduler internals shared by scheduler.cc and scheduler_state.cc (not a public header).
#pragma once

#include <condition_variable>
#include <thread>

#include "coordinator/replica_scheduler.h"
#include "coordinator/scheduler.h"

namespace bitfleet::coordinator {

// One replica: its scheduling state and the mailbox of its dispatch thread. Everything but
// `executor` calls and `thread` is guarded by the scheduler's mu_.
struct Scheduler::ReplicaSlot {
  ReplicaSlot(int index, Executor* executor, const ReplicaConfig& config, SequenceObserver& observer,
              PromptScoreCache* scores)
      : executor(executor), sched(index, config, observer, scores) {}

  Executor* executor;
  ReplicaScheduler sched;
  bool healthy = false;            // as last polled
  bool misconfigured = false;      // logged once per episode
  uint64_t incarnation = 0;        // of the executor when the replica was configured
  int64_t evictions_seen = 0;      // for the eviction counter's delta
  int64_t prefill_tokens_seen = 0;
  int64_t draft_tokens_seen = 0;
  int64_t accepted_draft_tokens_seen = 0;

  std::thread thread;
  std::condition_variable cv;      // wakes the dispatch thread
  bool has_plan = false;           // `plan` waits for the dispatch thread
  StepPlan plan;
  bool in_flight = false;          // from dispatch until the result is applied
  bool result_ready = false;
  StatusOr<StepResult> result = StepResult{};
  Clock::time_point step_start;
};

}  // namespace bitfleet::coordinator

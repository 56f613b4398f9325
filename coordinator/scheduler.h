// The coordinator's scheduler (DESIGN.md §3, §6; docs/scheduler.md): iteration-level
// continuous batching over one or more replicas, with chunked prefill under a per-step token
// budget, paged KV metadata with shared prefix blocks, preemption when blocks run out, and
// routing of each request to a replica.
//
// Use:
//   BF_ASSIGN_OR_RETURN(auto scheduler, Scheduler::Create(options, {&replica0, &replica1}));
//   scheduler->Start();                                   // the loop thread
//   BF_ASSIGN_OR_RETURN(RequestId id, scheduler->Submit(std::move(request)));
//   ...events arrive on request.sink...; scheduler->Cancel(id);
//   scheduler->Drain(Clock::now() + 30s);                 // SIGTERM
//
// Threads: Submit, Cancel, Drain, Stop and every accessor are thread-safe. One loop thread owns
// the scheduling state; each replica has a dispatch thread that calls its Executor::Execute, so
// a slow replica does not hold the others back. Request sinks run on the loop thread (or on the
// thread calling RunIteration/Drain/Stop when there is no loop); they may call Submit and
// Cancel, never Drain or Stop.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "coordinator/executor.h"
#include "coordinator/metrics.h"
#include "coordinator/replica_scheduler.h"
#include "coordinator/request.h"
#include "coordinator/router.h"
#include "coordinator/scheduler_metrics.h"
#include "core/status.h"

namespace bitfleet::coordinator {

struct SchedulerOptions {
  std::string model_id;                   // salts every block hash (required)
  int32_t n_vocab = 0;                    // token ids must be in [0, n_vocab)
  int32_t max_context = 0;                // prompt + max_tokens limit
  int32_t kv_block_size = 16;             // every replica must use this block size
  std::vector<int32_t> end_of_generation; // sampled ids that finish a request with "stop"
  int32_t max_queued_requests = 256;      // accepted, not yet admitted; more: RESOURCE_EXHAUSTED
  int32_t max_step_tokens = 0;            // per-step token budget; 0: each executor's limit
  int32_t max_prefill_chunk = 0;          // longest prefill chunk; 0: the step budget
  DraftOptions speculative;               // speculative decoding by prompt lookup (max_tokens 0: off)
  bool prefix_caching = true;
  // Budget of the prompt scores kept per block for later scored requests (PromptScoreCache);
  // 0, or no prefix caching: none kept.
  int64_t prompt_score_cache_bytes = int64_t{64} << 20;
  RouterOptions router;
  // Check the KV invariants after every step (tests): the first violation is logged and kept
  // (invariant_status()).
  bool check_invariants = false;
  // How often an idle loop polls replica health and deadlines.
  std::chrono::milliseconds idle_poll{20};
  // Registry for the scheduler's metrics; null: one the scheduler owns.
  MetricsRegistry* metrics = nullptr;
};

struct ReplicaStats {
  bool healthy = false;
  int32_t running = 0;
  int32_t waiting = 0;
  cache::BlockCounts blocks;
  int64_t evictions = 0;
  int64_t draft_tokens = 0;           // speculative decoding: drafts fed
  int64_t accepted_draft_tokens = 0;  // and kept
};

struct SchedulerStats {
  int32_t queued = 0;   // accepted, not yet admitted
  int32_t live = 0;     // accepted, not yet finished
  int64_t steps = 0;
  std::vector<ReplicaStats> replicas;
};

class Scheduler : private SequenceObserver {
 public:
  // INVALID_ARGUMENT for bad options or no replicas. Executors are not owned and must outlive
  // the scheduler. Replica health is polled once here, then by the loop.
  static StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options,
                                                     std::vector<Executor*> replicas);
  ~Scheduler() override;  // Stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the loop and dispatch threads. Requests submitted before Start wait for it.
  void Start();

  // Accepts a request and returns its id; every accepted request gets exactly one kFinished
  // event. Errors (no event follows): INVALID_ARGUMENT (ValidateRequest), DEADLINE_EXCEEDED
  // (deadline already passed), UNAVAILABLE (draining, stopped, or no healthy replica),
  // RESOURCE_EXHAUSTED (admission queue full, or more KV positions than any healthy replica's
  // whole pool).
  StatusOr<RequestId> Submit(GenerateRequest request);
  // Ends a request at the next iteration: its sequence leaves the batch and frees its blocks.
  // `reason`: kCancelled (status CANCELLED) or kStop (status OK; a stop string the service
  // layer saw). NOT_FOUND for an unknown or finished id; INVALID_ARGUMENT for another reason.
  Status Cancel(RequestId id, FinishReason reason = FinishReason::kCancelled);
  // Stops admitting (Submit: UNAVAILABLE) and waits until every request has finished or
  // `deadline` passes; requests still running then end with UNAVAILABLE (kCancelled).
  // OK when all finished in time, DEADLINE_EXCEEDED otherwise.
  Status Drain(Clock::time_point deadline);
  // Ends every request with UNAVAILABLE (kCancelled) and joins the threads. Idempotent.
  void Stop();

  // Without Start (tests): one iteration on the calling thread, every replica with work
  // running one step inline. Returns whether any step ran.
  bool RunIteration();

  int num_replicas() const { return static_cast<int>(replicas_.size()); }
  bool replica_healthy(int replica) const;
  // Not draining or stopped, and at least one replica healthy (the gRPC health status).
  bool serving() const;
  SchedulerStats Stats() const;
  MetricsRegistry& metrics() { return *metrics_registry_; }
  std::string RenderPrometheus() const { return metrics_registry_->RenderPrometheus(); }
  // OK, or the first invariant violation seen (options.check_invariants).
  Status invariant_status() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct ReplicaSlot;
  struct PendingEvent {
    std::shared_ptr<const RequestSink> sink;
    RequestEvent event;
  };

  Scheduler(const SchedulerOptions& options, std::vector<Executor*> replicas);

  // All *Locked methods need mu_.
  void PollHealthLocked(ReplicaSlot& slot);
  // Reaping, then the replica's next plan (empty: nothing to run). The replica must be idle.
  StepPlan PlanLocked(ReplicaSlot& slot);
  void CheckInvariantsLocked(const ReplicaSlot& slot);
  void RouteInboxLocked();
  void ApplyLocked(ReplicaSlot& slot, const StatusOr<StepResult>& result);
  void AbortAllLocked(const Status& status);
  void UpdateGaugesLocked();
  bool AnyHealthyLocked() const;
  int32_t LargestPoolLocked() const;
  // Hands the queued events to their sinks in order (never two threads at once).
  void DeliverEvents();
  void Loop();
  void DispatchLoop(ReplicaSlot* slot);

  // SequenceObserver (called under mu_).
  void OnAdmitted(Sequence& seq, bool first, int32_t cached_tokens) override;
  void OnPreempted(Sequence& seq) override;
  void OnPromptLogprobs(Sequence& seq, int32_t first, std::span<const ScoredToken> scored, bool from_cache) override;
  void OnToken(Sequence& seq, const SequenceResult& sampled) override;
  void OnFinished(std::unique_ptr<Sequence> seq, FinishReason reason, Status status) override;

  const SchedulerOptions options_;
  std::unique_ptr<MetricsRegistry> owned_registry_;
  MetricsRegistry* metrics_registry_;
  SchedulerMetrics metrics_;
  std::unique_ptr<PromptScoreCache> score_cache_;  // null: off; guarded by mu_

  mutable std::mutex mu_;
  std::condition_variable loop_cv_;   // wakes the loop: inbox, result, cancel, stop
  std::condition_variable drain_cv_;  // live_ became empty
  std::vector<std::unique_ptr<ReplicaSlot>> replicas_;
  std::deque<std::unique_ptr<Sequence>> inbox_;            // submitted, not yet routed
  std::unordered_map<RequestId, Sequence*> live_;          // every accepted, unfinished request
  std::vector<PendingEvent> events_;
  RequestId next_id_ = 1;
  int32_t queued_ = 0;
  int64_t steps_ = 0;
  bool draining_ = false;
  bool abort_all_ = false;
  bool stop_requested_ = false;
  bool dispatch_stop_ = false;
  bool stopped_ = false;
  bool wake_ = false;
  bool delivering_ = false;  // DeliverEvents is handing out a batch
  Status invariant_status_;
  Clock::time_point now_;                 // of the iteration in progress
  Clock::time_point rate_window_start_;
  double rate_window_tokens_ = 0.0;

  std::mutex delivery_mu_;  // serializes DeliverEvents; taken before mu_
  std::thread loop_thread_;
};

}  // namespace bitfleet::coordinator

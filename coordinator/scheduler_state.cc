// Scheduler internals that run under its lock: health polling, routing, applying results,
// gauges, and the SequenceObserver callbacks that become request events and metrics.
#include <algorithm>
#include <chrono>

#include "cache/block_table.h"
#include "coordinator/scheduler.h"
#include "coordinator/scheduler_replica_slot.h"
#include "core/logging.h"

namespace bitfleet::coordinator {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Adds to `counter` what a replica's running total gained since `seen`, and remembers it.
void AddGain(Counter* counter, int64_t total, int64_t* seen) {
  counter->Increment(static_cast<double>(total - *seen));
  *seen = total;
}

}  // namespace

void Scheduler::PollHealthLocked(ReplicaSlot& slot) {
  const int index = slot.sched.index();
  bool healthy = slot.executor->healthy();
  if (healthy) {
    ReplicaCapacity capacity;
    capacity.kv_blocks = slot.executor->kv_blocks();
    capacity.max_step_tokens = slot.executor->max_step_tokens();
    if (options_.max_step_tokens > 0) capacity.max_step_tokens = std::min(capacity.max_step_tokens, options_.max_step_tokens);
    capacity.max_step_sequences = slot.executor->max_step_sequences();
    capacity.max_logit_rows = std::max(slot.executor->max_logit_rows(), capacity.max_step_sequences);
    capacity.max_draft_tokens = slot.executor->max_draft_tokens();
    const int32_t block_size = slot.executor->kv_block_size();
    const bool usable = block_size == options_.kv_block_size && capacity.kv_blocks > 0 &&
                        capacity.max_step_tokens > 0 && capacity.max_step_sequences > 0;
    if (!usable) {
      if (!slot.misconfigured) {
        Logger("scheduler")->error(
            "replica {} is unusable: block size {} (scheduler: {}), {} KV blocks, step limits {} tokens / {} sequences",
            index, block_size, options_.kv_block_size, capacity.kv_blocks, capacity.max_step_tokens,
            capacity.max_step_sequences);
      }
      slot.misconfigured = true;
      healthy = false;
    } else {
      slot.misconfigured = false;
      const uint64_t incarnation = slot.executor->incarnation();
      if (slot.healthy && (capacity != slot.sched.capacity() || incarnation != slot.incarnation)) {
        // Restarted between two polls: nothing we knew about its KV holds any more.
        Logger("scheduler")->warn("replica {} restarted (incarnation {}); failing its requests", index, incarnation);
        slot.sched.FailAll(absl::UnavailableError(absl::StrCat("replica ", index, " restarted")));
        slot.healthy = false;
      }
      if (!slot.healthy) {
        // Fresh (or restarted) replica: its KV storage is empty, whatever we knew is stale.
        slot.incarnation = incarnation;
        slot.sched.Configure(capacity);
        Logger("scheduler")->info(
            "replica {} serving: {} KV blocks of {} tokens, {} tokens / {} sequences / {} logit rows per step, "
            "drafts of up to {} tokens",
            index, capacity.kv_blocks, block_size, capacity.max_step_tokens, capacity.max_step_sequences,
            capacity.max_logit_rows, capacity.max_draft_tokens);
      }
    }
  }
  if (!healthy && slot.healthy) {
    // A warning only when requests are lost: after a drain the workers leave an idle replica,
    // which is the normal end of a shutdown, not an incident.
    const int32_t affected = slot.sched.num_running() + slot.sched.num_waiting();
    if (affected > 0) {
      Logger("scheduler")->warn("replica {} is not healthy; failing its {} requests", index, affected);
    } else {
      Logger("scheduler")->info("replica {} is not serving (no requests on it)", index);
    }
    slot.sched.FailAll(absl::UnavailableError(absl::StrCat("replica ", index, " is unavailable")));
  }
  slot.healthy = healthy;
}

StepPlan Scheduler::PlanLocked(ReplicaSlot& slot) {
  slot.sched.Reap(now_);
  if (abort_all_) {
    slot.sched.FinishAll(FinishReason::kCancelled, absl::UnavailableError("server draining: deadline passed"));
  }
  if (!slot.healthy) return StepPlan{};
  StepPlan plan = slot.sched.BuildPlan();
  CheckInvariantsLocked(slot);
  return plan;
}

void Scheduler::CheckInvariantsLocked(const ReplicaSlot& slot) {
  if (!options_.check_invariants || !invariant_status_.ok()) return;
  Status status = slot.sched.CheckInvariants();
  if (!status.ok()) {
    Logger("scheduler")->error("replica {}: KV invariant violated: {}", slot.sched.index(),
                               std::string(status.message()));
    invariant_status_ = std::move(status);
  }
}

bool Scheduler::AnyHealthyLocked() const {
  return std::any_of(replicas_.begin(), replicas_.end(), [](const auto& slot) { return slot->healthy; });
}

int32_t Scheduler::LargestPoolLocked() const {
  int32_t largest = 0;
  for (const auto& slot : replicas_) {
    if (slot->healthy) largest = std::max(largest, slot->sched.capacity().kv_blocks);
  }
  return largest;
}

void Scheduler::RouteInboxLocked() {
  const int32_t bs = options_.kv_block_size;
  while (!inbox_.empty()) {
    std::unique_ptr<Sequence> seq = std::move(inbox_.front());
    inbox_.pop_front();
    if (seq->cancel_reason != FinishReason::kNone) {
      const FinishReason reason = seq->cancel_reason;
      OnFinished(std::move(seq), reason,
                 reason == FinishReason::kStop ? absl::OkStatus() : absl::CancelledError("request cancelled"));
      continue;
    }
    const int64_t positions = static_cast<int64_t>(seq->prompt_len) + seq->max_tokens - 1;
    const int64_t blocks_needed = cache::BlocksForTokens(positions, bs);
    const size_t cacheable = std::min(seq->block_hashes.size(), (seq->tokens.size() - 1) / bs);
    std::span<const cache::BlockHash> chain(seq->block_hashes.data(), cacheable);
    std::vector<ReplicaCandidate> candidates;
    for (const auto& slot : replicas_) {
      ReplicaCandidate c;
      c.healthy = slot->healthy;
      c.fits = blocks_needed <= slot->sched.capacity().kv_blocks;
      c.prompt_tokens = static_cast<int64_t>(seq->tokens.size());
      c.cached_tokens = static_cast<int64_t>(slot->sched.blocks().CachedPrefixBlocks(chain)) * bs;
      c.pending_prefill_tokens = slot->sched.PendingPrefillTokens();
      c.sequences = slot->sched.num_running() + slot->sched.num_waiting();
      candidates.push_back(c);
    }
    const int replica = PickReplica(candidates, options_.router);
    if (replica < 0) {
      Status status = AnyHealthyLocked()
                          ? absl::ResourceExhaustedError("no healthy replica can hold the request")
                          : absl::UnavailableError("no healthy replica");
      OnFinished(std::move(seq), FinishReason::kError, std::move(status));
      continue;
    }
    Logger("scheduler")->debug("request {} ({}, tenant '{}'): replica {}, {} prompt tokens, {} cached there", seq->id,
                               seq->request_id, seq->tenant_id, replica, seq->prompt_len,
                               candidates[replica].cached_tokens);
    replicas_[replica]->sched.Enqueue(std::move(seq));
  }
}

void Scheduler::ApplyLocked(ReplicaSlot& slot, const StatusOr<StepResult>& result) {
  slot.result_ready = false;
  slot.in_flight = false;
  metrics_.step_duration->Observe(Seconds(now_ - slot.step_start));
  slot.sched.ApplyResult(result);
  ++steps_;
  metrics_.steps->Increment();
  CheckInvariantsLocked(slot);
}

void Scheduler::AbortAllLocked(const Status& status) {
  while (!inbox_.empty()) {
    std::unique_ptr<Sequence> seq = std::move(inbox_.front());
    inbox_.pop_front();
    OnFinished(std::move(seq), FinishReason::kCancelled, status);
  }
  for (auto& slot : replicas_) slot->sched.FinishAll(FinishReason::kCancelled, status);
}

void Scheduler::UpdateGaugesLocked() {
  int32_t running = 0;
  for (size_t r = 0; r < replicas_.size(); ++r) {
    ReplicaSlot& slot = *replicas_[r];
    const ReplicaMetrics& m = metrics_.replicas[r];
    const cache::BlockCounts counts = slot.sched.blocks().Counts();
    m.healthy->Set(slot.healthy ? 1.0 : 0.0);
    m.kv_used->Set(counts.used);
    m.kv_cached->Set(counts.cached);
    m.kv_free->Set(counts.free);
    m.running->Set(slot.sched.num_running());
    m.waiting->Set(slot.sched.num_waiting());
    running += slot.sched.num_running();
    AddGain(metrics_.kv_evictions, slot.sched.blocks().evictions(), &slot.evictions_seen);
    AddGain(metrics_.prefill_tokens, slot.sched.prefill_tokens_total(), &slot.prefill_tokens_seen);
    AddGain(metrics_.draft_tokens, slot.sched.draft_tokens_total(), &slot.draft_tokens_seen);
    AddGain(metrics_.accepted_draft_tokens, slot.sched.accepted_draft_tokens_total(),
            &slot.accepted_draft_tokens_seen);
  }
  metrics_.queue_depth->Set(queued_);
  metrics_.running_sequences->Set(running);
  if (score_cache_ != nullptr) metrics_.prompt_score_cache_bytes->Set(static_cast<double>(score_cache_->bytes()));
  const double elapsed = Seconds(now_ - rate_window_start_);
  if (elapsed >= 1.0) {
    metrics_.tokens_per_second->Set(rate_window_tokens_ / elapsed);
    rate_window_tokens_ = 0.0;
    rate_window_start_ = now_;
  }
}

void Scheduler::OnAdmitted(Sequence& seq, bool first, int32_t cached_tokens) {
  if (!first) return;
  --queued_;
  seq.admitted = now_;
  metrics_.queue_time->Observe(Seconds(now_ - seq.arrival));
  // A scored request attaches only the KV its kept scores cover (counted by the prompt score
  // cache's own metric): left out of the hit rate, which measures prefix lookups.
  if (seq.prompt_logprobs) return;
  metrics_.prefix_lookup_tokens->Increment(seq.prompt_len);
  metrics_.prefix_hit_tokens->Increment(std::min(cached_tokens, seq.prompt_len));
  const double looked_up = metrics_.prefix_lookup_tokens->value();
  if (looked_up > 0) metrics_.prefix_hit_rate->Set(metrics_.prefix_hit_tokens->value() / looked_up);
}

void Scheduler::OnPreempted(Sequence& seq) {
  metrics_.preemptions->Increment();
  Logger("scheduler")->debug("request {} ({}) preempted on replica {} after {} tokens", seq.id, seq.request_id,
                             seq.replica, seq.tokens.size());
}

void Scheduler::OnPromptLogprobs(Sequence& seq, int32_t first, std::span<const ScoredToken> scored,
                                 bool from_cache) {
  if (from_cache) metrics_.prompt_score_cache_hit_tokens->Increment(static_cast<double>(scored.size()));
  RequestEvent event;
  event.kind = RequestEvent::Kind::kPromptLogprobs;
  event.id = seq.id;
  event.prompt_position = first;
  event.prompt_logprobs.assign(scored.begin(), scored.end());
  events_.push_back({seq.sink, std::move(event)});
}

void Scheduler::OnToken(Sequence& seq, const SequenceResult& sampled) {
  if (seq.generated() == 1) {
    metrics_.time_to_first_token->Observe(Seconds(now_ - seq.arrival));
    metrics_.prefill_time->Observe(Seconds(now_ - seq.admitted));
  } else {
    metrics_.inter_token_latency->Observe(Seconds(now_ - seq.last_token_time));
  }
  seq.last_token_time = now_;
  metrics_.generated_tokens->Increment();
  rate_window_tokens_ += 1.0;
  RequestEvent event;
  event.kind = RequestEvent::Kind::kToken;
  event.id = seq.id;
  event.token = sampled.token;
  if (sampled.has_logprobs) {
    event.has_logprobs = true;
    event.logprob = sampled.logprob;
    event.top_logprobs = sampled.top_logprobs;
  }
  events_.push_back({seq.sink, std::move(event)});
}

void Scheduler::OnFinished(std::unique_ptr<Sequence> seq, FinishReason reason, Status status) {
  if (!seq->admitted_once) --queued_;
  live_.erase(seq->id);
  seq->usage.prompt_tokens = seq->prompt_len;
  seq->usage.completion_tokens = std::max(0, seq->generated());
  metrics_.CountFinished(reason);
  metrics_.request_duration->Observe(Seconds(now_ - seq->arrival));
  Logger("scheduler")->debug("request {} ({}) finished: {} ({}), {} + {} tokens, {} cached, {} preemptions", seq->id,
                             seq->request_id, FinishReasonName(reason), std::string(status.message()),
                             seq->usage.prompt_tokens, seq->usage.completion_tokens, seq->usage.cached_prompt_tokens,
                             seq->usage.preemptions);
  RequestEvent event;
  event.kind = RequestEvent::Kind::kFinished;
  event.id = seq->id;
  event.finish_reason = reason;
  event.status = std::move(status);
  event.usage = seq->usage;
  events_.push_back({std::move(seq->sink), std::move(event)});
}

}  // namespace bitfleet::coordinator

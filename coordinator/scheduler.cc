#include "coordinator/scheduler.h"

#include <algorithm>

#include "cache/block_table.h"
#include "coordinator/request_validation.h"
#include "coordinator/scheduler_replica_slot.h"
#include "core/logging.h"
#include "core/spin_wait.h"

namespace bitfleet::coordinator {

StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options,
                                                       std::vector<Executor*> replicas) {
  if (options.model_id.empty()) return absl::InvalidArgumentError("scheduler: empty model id");
  if (options.n_vocab <= 0) return absl::InvalidArgumentError("scheduler: n_vocab must be positive");
  if (options.max_context <= 0) return absl::InvalidArgumentError("scheduler: max_context must be positive");
  if (options.kv_block_size <= 0) return absl::InvalidArgumentError("scheduler: kv_block_size must be positive");
  if (options.max_queued_requests < 1) return absl::InvalidArgumentError("scheduler: max_queued_requests must be >= 1");
  if (options.max_step_tokens < 0 || options.max_prefill_chunk < 0) {
    return absl::InvalidArgumentError("scheduler: negative step limit");
  }
  if (const char* error = DraftOptionsError(options.speculative); *error != '\0') {
    return absl::InvalidArgumentError(absl::StrCat("scheduler: speculative decoding: ", error));
  }
  if (options.prompt_score_cache_bytes < 0) {
    return absl::InvalidArgumentError("scheduler: negative prompt score cache budget");
  }
  if (replicas.empty()) return absl::InvalidArgumentError("scheduler: no replicas");
  for (Executor* executor : replicas) {
    if (executor == nullptr) return absl::InvalidArgumentError("scheduler: null executor");
  }
  std::unique_ptr<Scheduler> scheduler(new Scheduler(options, std::move(replicas)));
  std::lock_guard<std::mutex> lock(scheduler->mu_);
  for (auto& slot : scheduler->replicas_) scheduler->PollHealthLocked(*slot);
  scheduler->UpdateGaugesLocked();
  return scheduler;
}

Scheduler::Scheduler(const SchedulerOptions& options, std::vector<Executor*> replicas)
    : options_(options),
      owned_registry_(options.metrics == nullptr ? std::make_unique<MetricsRegistry>() : nullptr),
      metrics_registry_(options.metrics != nullptr ? options.metrics : owned_registry_.get()),
      metrics_(*metrics_registry_, static_cast<int>(replicas.size())),
      score_cache_(options.prefix_caching && options.prompt_score_cache_bytes > 0
                       ? std::make_unique<PromptScoreCache>(options.prompt_score_cache_bytes)
                       : nullptr) {
  ReplicaConfig config;
  config.block_size = options.kv_block_size;
  config.n_vocab = options.n_vocab;
  config.end_of_generation = options.end_of_generation;
  config.prefix_caching = options.prefix_caching;
  config.max_prefill_chunk = options.max_prefill_chunk;
  config.draft = options.speculative;
  for (size_t i = 0; i < replicas.size(); ++i) {
    replicas_.push_back(std::make_unique<ReplicaSlot>(static_cast<int>(i), replicas[i], config,
                                                      static_cast<SequenceObserver&>(*this), score_cache_.get()));
  }
  now_ = Clock::now();
  rate_window_start_ = now_;
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (loop_thread_.joinable() || stopped_) return;
  for (auto& slot : replicas_) slot->thread = std::thread(&Scheduler::DispatchLoop, this, slot.get());
  loop_thread_ = std::thread(&Scheduler::Loop, this);
}

StatusOr<RequestId> Scheduler::Submit(GenerateRequest request) {
  auto reject = [this](Status status) {
    metrics_.CountRejected(status);
    return status;
  };
  BF_RETURN_IF_ERROR(reject(ValidateRequest(request, {options_.n_vocab, options_.max_context})));
  const Clock::time_point now = Clock::now();
  if (request.deadline <= now) return reject(absl::DeadlineExceededError("request deadline already passed"));

  auto seq = std::make_unique<Sequence>();
  seq->sink = std::make_shared<const RequestSink>(std::move(request.sink));
  seq->sampling = request.sampling;
  seq->max_tokens = request.max_tokens;
  seq->ignore_eos = request.ignore_eos;
  seq->prompt_logprobs = request.prompt_logprobs;
  seq->constraint = std::move(request.constraint);
  seq->deadline = request.deadline;
  seq->tenant_id = std::move(request.tenant_id);
  seq->request_id = std::move(request.request_id);
  seq->hash_scope = {std::move(request.tenant_salt), options_.model_id};
  seq->prompt_len = static_cast<int32_t>(request.prompt.size());
  seq->tokens = std::move(request.prompt);
  seq->arrival = now;
  if (options_.prefix_caching) {
    // Hash outside the lock: the caller's thread pays for its own prompt.
    BF_RETURN_IF_ERROR(
        reject(cache::ExtendBlockHashes(seq->hash_scope, seq->tokens, options_.kv_block_size, &seq->block_hashes)));
  }
  // The KV positions the request can ever hold: its last generated token is never fed back.
  const int64_t positions = static_cast<int64_t>(seq->prompt_len) + seq->max_tokens - 1;
  const int64_t blocks = cache::BlocksForTokens(positions, options_.kv_block_size);

  std::unique_lock<std::mutex> lock(mu_);
  if (draining_ || stopped_) {
    lock.unlock();
    return reject(absl::UnavailableError("server is draining"));
  }
  if (!AnyHealthyLocked()) {
    lock.unlock();
    return reject(absl::UnavailableError("no healthy replica"));
  }
  if (blocks > LargestPoolLocked()) {
    const int32_t largest = LargestPoolLocked();
    lock.unlock();
    return reject(absl::ResourceExhaustedError(
        absl::StrCat("request needs ", blocks, " KV blocks (", positions, " positions); the largest replica holds ",
                     largest)));
  }
  if (queued_ >= options_.max_queued_requests) {
    lock.unlock();
    return reject(absl::ResourceExhaustedError(
        absl::StrCat("admission queue full (", options_.max_queued_requests, " requests waiting)")));
  }
  const RequestId id = next_id_++;
  seq->id = id;
  live_[id] = seq.get();
  ++queued_;
  inbox_.push_back(std::move(seq));
  wake_ = true;
  loop_cv_.notify_one();
  return id;
}

Status Scheduler::Cancel(RequestId id, FinishReason reason) {
  if (reason != FinishReason::kCancelled && reason != FinishReason::kStop) {
    return absl::InvalidArgumentError("Cancel takes kCancelled or kStop");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(id);
  if (it == live_.end()) return absl::NotFoundError(absl::StrCat("no live request ", id));
  if (it->second->cancel_reason == FinishReason::kNone) it->second->cancel_reason = reason;
  wake_ = true;
  loop_cv_.notify_one();
  return absl::OkStatus();
}

Status Scheduler::Drain(Clock::time_point deadline) {
  bool threaded;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    threaded = loop_thread_.joinable() && !stop_requested_;
  }
  const Status late = absl::DeadlineExceededError("drain deadline passed; remaining requests ended UNAVAILABLE");
  if (!threaded) {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (live_.empty()) return absl::OkStatus();
      }
      if (Clock::now() >= deadline) break;
      if (!RunIteration()) std::this_thread::sleep_for(options_.idle_poll);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      AbortAllLocked(absl::UnavailableError("server draining: deadline passed"));
    }
    DeliverEvents();
    return late;
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto done = [&] { return (live_.empty() && events_.empty() && !delivering_) || stopped_; };
  if (drain_cv_.wait_until(lock, deadline, done)) return absl::OkStatus();
  abort_all_ = true;
  wake_ = true;
  loop_cv_.notify_one();
  drain_cv_.wait(lock, done);
  return late;
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    stop_requested_ = true;
    draining_ = true;
  }
  loop_cv_.notify_all();
  drain_cv_.notify_all();
  if (loop_thread_.joinable()) loop_thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    dispatch_stop_ = true;
    for (auto& slot : replicas_) slot->cv.notify_all();
  }
  for (auto& slot : replicas_) {
    if (slot->thread.joinable()) slot->thread.join();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    now_ = Clock::now();
    for (auto& slot : replicas_) {
      if (slot->result_ready) ApplyLocked(*slot, slot->result);
    }
    AbortAllLocked(absl::UnavailableError("scheduler stopped"));
    UpdateGaugesLocked();
  }
  DeliverEvents();
}

bool Scheduler::RunIteration() {
  std::vector<std::pair<ReplicaSlot*, StepPlan>> plans;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (loop_thread_.joinable() || stopped_) return false;  // the loop owns the iterations
    now_ = Clock::now();
    // Health first, so new requests are routed against what the replicas are now.
    for (auto& slot : replicas_) PollHealthLocked(*slot);
    RouteInboxLocked();
    for (auto& slot : replicas_) {
      StepPlan plan = PlanLocked(*slot);
      if (plan.sequences.empty()) continue;
      slot->in_flight = true;
      slot->step_start = now_;
      plans.emplace_back(slot.get(), std::move(plan));
    }
    UpdateGaugesLocked();
  }
  DeliverEvents();
  std::vector<StatusOr<StepResult>> results;
  for (auto& [slot, plan] : plans) results.push_back(slot->executor->Execute(plan));
  {
    std::lock_guard<std::mutex> lock(mu_);
    now_ = Clock::now();
    for (size_t i = 0; i < plans.size(); ++i) ApplyLocked(*plans[i].first, results[i]);
    UpdateGaugesLocked();
  }
  DeliverEvents();
  return !plans.empty();
}

void Scheduler::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_requested_) {
    now_ = Clock::now();
    // Results first, then health of the idle replicas, so new requests are routed against what
    // the replicas are now; then every idle replica gets its next plan.
    for (auto& slot : replicas_) {
      if (slot->result_ready) ApplyLocked(*slot, slot->result);
      if (!slot->in_flight) PollHealthLocked(*slot);
    }
    RouteInboxLocked();
    for (auto& slot_ptr : replicas_) {
      ReplicaSlot& slot = *slot_ptr;
      if (slot.in_flight) continue;
      StepPlan plan = PlanLocked(slot);
      if (plan.sequences.empty()) continue;
      slot.plan = std::move(plan);
      slot.has_plan = true;
      slot.in_flight = true;
      slot.step_start = now_;
      slot.cv.notify_one();
    }
    UpdateGaugesLocked();
    if (!events_.empty()) {
      lock.unlock();
      DeliverEvents();
      lock.lock();
      continue;  // a sink may have submitted or cancelled
    }
    if (live_.empty()) drain_cv_.notify_all();
    const auto woken = [&] {
      if (stop_requested_ || wake_) return true;
      for (auto& slot : replicas_) {
        if (slot->result_ready) return true;
      }
      return false;
    };
    // Polls first only while requests are live (core/spin_wait.h), never on an idle server.
    if (live_.empty() || !SpinUntil(lock, woken)) loop_cv_.wait_for(lock, options_.idle_poll, woken);
    wake_ = false;
  }
}

void Scheduler::DispatchLoop(ReplicaSlot* slot) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    const auto woken = [&] { return slot->has_plan || dispatch_stop_; };
    if (!SpinUntil(lock, woken)) slot->cv.wait(lock, woken);
    if (!slot->has_plan) return;
    StepPlan plan = std::move(slot->plan);
    slot->has_plan = false;
    lock.unlock();
    StatusOr<StepResult> result = slot->executor->Execute(plan);
    lock.lock();
    slot->result = std::move(result);
    slot->result_ready = true;
    loop_cv_.notify_one();
  }
}

void Scheduler::DeliverEvents() {
  std::lock_guard<std::mutex> delivery(delivery_mu_);
  std::vector<PendingEvent> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    events.swap(events_);
    delivering_ = true;
  }
  for (const PendingEvent& e : events) (*e.sink)(e.event);
  events.clear();  // a finished request's sink dies here, off the lock
  std::lock_guard<std::mutex> lock(mu_);
  delivering_ = false;
  if (live_.empty() && events_.empty()) drain_cv_.notify_all();
}

bool Scheduler::replica_healthy(int replica) const {
  std::lock_guard<std::mutex> lock(mu_);
  return replica >= 0 && replica < num_replicas() && replicas_[replica]->healthy;
}

bool Scheduler::serving() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !draining_ && !stopped_ && AnyHealthyLocked();
}

SchedulerStats Scheduler::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerStats stats;
  stats.queued = queued_;
  stats.live = static_cast<int32_t>(live_.size());
  stats.steps = steps_;
  for (const auto& slot : replicas_) {
    ReplicaStats r;
    r.healthy = slot->healthy;
    r.running = slot->sched.num_running();
    r.waiting = slot->sched.num_waiting();
    r.blocks = slot->sched.blocks().Counts();
    r.evictions = slot->sched.blocks().evictions();
    r.draft_tokens = slot->sched.draft_tokens_total();
    r.accepted_draft_tokens = slot->sched.accepted_draft_tokens_total();
    stats.replicas.push_back(r);
  }
  return stats;
}

Status Scheduler::invariant_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return invariant_status_;
}

}  // namespace bitfleet::coordinator

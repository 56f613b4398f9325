// The scheduler's metrics, registered once in a MetricsRegistry (docs/scheduler.md lists the
// names and meanings). Updated on the scheduler's thread; read by RenderPrometheus anywhere.
#pragma once

#include <string>
#include <vector>

#include "coordinator/metrics.h"
#include "coordinator/request.h"

namespace bitfleet::coordinator {

struct ReplicaMetrics {
  Gauge* healthy = nullptr;
  Gauge* kv_used = nullptr;
  Gauge* kv_cached = nullptr;
  Gauge* kv_free = nullptr;
  Gauge* running = nullptr;
  Gauge* waiting = nullptr;
};

struct SchedulerMetrics {
  SchedulerMetrics(MetricsRegistry& registry, int num_replicas);

  Gauge* queue_depth;
  Gauge* running_sequences;
  Counter* prefix_lookup_tokens;
  Counter* prefix_hit_tokens;
  Gauge* prefix_hit_rate;
  Counter* prompt_score_cache_hit_tokens;
  Gauge* prompt_score_cache_bytes;
  Counter* kv_evictions;
  Counter* preemptions;
  Histogram* time_to_first_token;
  Histogram* queue_time;    // submission -> first admission
  Histogram* prefill_time;  // first admission -> first token
  Histogram* inter_token_latency;
  Histogram* request_duration;
  Histogram* step_duration;
  Counter* generated_tokens;
  Counter* prefill_tokens;
  Counter* draft_tokens;
  Counter* accepted_draft_tokens;
  Gauge* tokens_per_second;
  Counter* steps;
  std::vector<ReplicaMetrics> replicas;

  // One series per finish reason / rejection code, created on first use.
  void CountFinished(FinishReason reason);
  void CountRejected(const Status& status);

 private:
  MetricsRegistry& registry_;
};

}  // namespace bitfleet::coordinator

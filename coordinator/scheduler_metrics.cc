#include "coordinator/scheduler_metrics.h"

#include "absl/status/status.h"

namespace bitfleet::coordinator {
SchedulerMetrics::SchedulerMetrics(MetricsRegistry& registry, int num_replicas) : registry_(registry) {
  queue_depth = registry.AddGauge("bitfleet_queue_depth", "Requests accepted but not yet admitted to a batch");
  running_sequences = registry.AddGauge("bitfleet_running_sequences", "Sequences in a running batch, all replicas");
  prefix_lookup_tokens = registry.AddCounter("bitfleet_prefix_cache_lookup_tokens_total",
                                             "Prompt tokens looked up in the prefix cache at first admission");
  prefix_hit_tokens = registry.AddCounter("bitfleet_prefix_cache_hit_tokens_total",
                                          "Prompt tokens found in the prefix cache (not recomputed)");
  prefix_hit_rate = registry.AddGauge("bitfleet_prefix_cache_hit_rate",
                                      "bitfleet_prefix_cache_hit_tokens_total / bitfleet_prefix_cache_lookup_tokens_total");
  prompt_score_cache_hit_tokens =
      registry.AddCounter("bitfleet_prompt_score_cache_hit_tokens_total",
                          "Prompt log probabilities reported from the prompt score cache (not computed)");
  prompt_score_cache_bytes =
      registry.AddGauge("bitfleet_prompt_score_cache_bytes", "Memory the prompt score cache holds (estimated)");
  kv_evictions = registry.AddCounter("bitfleet_kv_evictions_total", "Cached KV blocks reallocated for new content");
  preemptions = registry.AddCounter("bitfleet_preemptions_total", "Sequences preempted because KV blocks ran out");
  time_to_first_token = registry.AddHistogram("bitfleet_time_to_first_token_seconds",
                                              "From submission to the first generated token", LatencyBuckets());
  queue_time = registry.AddHistogram("bitfleet_request_queue_seconds",
                                     "From submission to the first admission to a batch (queueing)",
                                     LatencyBuckets());
  prefill_time = registry.AddHistogram(
      "bitfleet_request_prefill_seconds",
      "From the first admission to the first generated token (the prompt's uncached part, with preemptions)",
      LatencyBuckets());
  inter_token_latency = registry.AddHistogram("bitfleet_inter_token_latency_seconds",
                                              "Between consecutive generated tokens of a request", LatencyBuckets());
  request_duration = registry.AddHistogram("bitfleet_request_duration_seconds",
                                           "From submission to the end of a request", LatencyBuckets());
  step_duration = registry.AddHistogram("bitfleet_step_duration_seconds", "One step on one replica (plan to result)",
                                        LatencyBuckets());
  generated_tokens = registry.AddCounter("bitfleet_generated_tokens_total", "Tokens generated (streamed)");
  prefill_tokens = registry.AddCounter("bitfleet_prefill_tokens_total",
                                       "Tokens fed through the model as prefill, including recomputes");
  draft_tokens = registry.AddCounter("bitfleet_speculative_draft_tokens_total",
                                     "Draft tokens fed by speculative decoding (--speculative-tokens)");
  accepted_draft_tokens = registry.AddCounter("bitfleet_speculative_accepted_tokens_total",
                                              "Draft tokens the model generated too (kept: each saved a step)");
  tokens_per_second =
      registry.AddGauge("bitfleet_generated_tokens_per_second", "Generated tokens per second over the last seconds");
  steps = registry.AddCounter("bitfleet_steps_total", "Steps executed, all replicas");
  for (int r = 0; r < num_replicas; ++r) {
    const std::string id = std::to_string(r);
    ReplicaMetrics m;
    m.healthy = registry.AddGauge("bitfleet_replica_healthy", "1 when the replica is serving, else 0", {{"replica", id}});
    const char* kv_help = "KV blocks by state: used (referenced), cached (reusable prefix, evictable), free";
    m.kv_used = registry.AddGauge("bitfleet_kv_blocks", kv_help, {{"replica", id}, {"state", "used"}});
    m.kv_cached = registry.AddGauge("bitfleet_kv_blocks", kv_help, {{"replica", id}, {"state", "cached"}});
    m.kv_free = registry.AddGauge("bitfleet_kv_blocks", kv_help, {{"replica", id}, {"state", "free"}});
    m.running = registry.AddGauge("bitfleet_replica_running_sequences", "Running sequences per replica",
                                  {{"replica", id}});
    m.waiting = registry.AddGauge("bitfleet_replica_waiting_sequences",
                                  "Sequences routed to the replica and waiting for blocks or budget",
                                  {{"replica", id}});
    replicas.push_back(m);
  }
}

void SchedulerMetrics::CountFinished(FinishReason reason) {
  registry_
      .AddCounter("bitfleet_requests_finished_total", "Requests finished, by reason",
                  {{"reason", FinishReasonName(reason)}})
      ->Increment();
}

void SchedulerMetrics::CountRejected(const Status& status) {
  registry_
      .AddCounter("bitfleet_requests_rejected_total", "Requests refused at submission, by status code",
                  {{"code", absl::StatusCodeToString(status.code())}})
      ->Increment();
}

}  // namespace bitfleet::coordinator

// Counters, gauges and histograms, and their Prometheus text exposition (format 0.0.4), which
// the service serves on /metrics. docs/scheduler.md lists the scheduler's metric names.
//
// Thread-safety: every method of every class here is thread-safe. Updates are lock-free
// atomics; the registry's mutex guards only its list of metrics. Metric pointers handed out by
// the registry stay valid for the registry's lifetime.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace bitfleet::coordinator {

// Label pairs of one series, e.g. {{"replica", "0"}, {"state", "used"}}.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  // `delta` < 0 is ignored (counters only go up).
  void Increment(double delta = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `upper_bounds`: increasing bucket bounds (the +Inf bucket is implicit).
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then the +Inf bucket (= count)
    double sum = 0.0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> bucket_counts_;  // per bucket, +Inf last
  std::atomic<double> sum_{0.0};
  std::atomic<uint64_t> count_{0};
};

// Latency buckets in seconds, 1 ms to 60 s.
std::vector<double> LatencyBuckets();

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Returns the series `name`{labels}, creating it (and its family, with `help`) on first use.
  // Series of one name share a type; asking for an existing name with another type, or with
  // another name than [a-zA-Z_:][a-zA-Z0-9_:]*, logs an error and returns a series that is
  // not exported, so a caller mistake never crashes the server.
  Counter* AddCounter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help, std::vector<double> upper_bounds,
                          const MetricLabels& labels = {});

  // Every family in registration order: # HELP, # TYPE, then one line per series (histograms:
  // _bucket{le=...}, _sum, _count).
  std::string RenderPrometheus() const;

 private:
  struct Family;
  struct Series;
  Series* FindOrAdd(const std::string& name, const std::string& help, int type, const MetricLabels& labels,
                    const std::vector<double>* upper_bounds);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;
  std::vector<std::unique_ptr<Series>> detached_;  // mistakes: kept alive, never rendered
};

}  // namespace bitfleet::coordinator

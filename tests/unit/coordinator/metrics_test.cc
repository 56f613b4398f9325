// Prometheus text exposition of counters, gauges and histograms, checked line by line.
#include "coordinator/metrics.h"

#include <cmath>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::coordinator {
namespace {

TEST(MetricsTest, RendersEveryTypeInTheTextFormat) {
  MetricsRegistry registry;
  Counter* requests = registry.AddCounter("test_requests_total", "Requests served");
  Gauge* used = registry.AddGauge("test_blocks", "Blocks by state", {{"replica", "0"}, {"state", "used"}});
  Gauge* free_blocks = registry.AddGauge("test_blocks", "ignored: the family keeps its first help",
                                         {{"replica", "0"}, {"state", "free"}});
  Histogram* latency = registry.AddHistogram("test_latency_seconds", "Latency", {0.5, 1.0});
  requests->Increment();
  requests->Increment(2.5);
  requests->Increment(-7);  // ignored: counters only go up
  used->Set(3);
  free_blocks->Set(5);
  free_blocks->Add(-1);
  latency->Observe(0.25);
  latency->Observe(0.5);  // bounds are inclusive
  latency->Observe(2.0);
  EXPECT_EQ(registry.RenderPrometheus(),
            "# HELP test_requests_total Requests served\n"
            "# TYPE test_requests_total counter\n"
            "test_requests_total 3.5\n"
            "# HELP test_blocks Blocks by state\n"
            "# TYPE test_blocks gauge\n"
            "test_blocks{replica=\"0\",state=\"used\"} 3\n"
            "test_blocks{replica=\"0\",state=\"free\"} 4\n"
            "# HELP test_latency_seconds Latency\n"
            "# TYPE test_latency_seconds histogram\n"
            "test_latency_seconds_bucket{le=\"0.5\"} 2\n"
            "test_latency_seconds_bucket{le=\"1\"} 2\n"
            "test_latency_seconds_bucket{le=\"+Inf\"} 3\n"
            "test_latency_seconds_sum 2.75\n"
            "test_latency_seconds_count 3\n");
}

TEST(MetricsTest, SameNameAndLabelsReturnTheSameSeries) {
  MetricsRegistry registry;
  Counter* a = registry.AddCounter("x_total", "x", {{"k", "v"}});
  Counter* b = registry.AddCounter("x_total", "x", {{"k", "v"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, registry.AddCounter("x_total", "x", {{"k", "w"}}));
}

TEST(MetricsTest, MistakesAreDetachedNotFatal) {
  MetricsRegistry registry;
  registry.AddCounter("y_total", "y")->Increment();
  Gauge* wrong_type = registry.AddGauge("y_total", "y");  // same name, other type
  ASSERT_NE(wrong_type, nullptr);
  wrong_type->Set(42);
  Gauge* bad_name = registry.AddGauge("1bad-name", "z");
  ASSERT_NE(bad_name, nullptr);
  Gauge* bad_label = registry.AddGauge("ok_name", "z", {{"le", "1"}});
  ASSERT_NE(bad_label, nullptr);
  EXPECT_EQ(registry.RenderPrometheus(), "# HELP y_total y\n# TYPE y_total counter\ny_total 1\n");
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  MetricsRegistry registry;
  registry.AddGauge("esc", "line1\nline2 \\ end", {{"path", "a\"b\\c\nd"}})->Set(std::nan(""));
  EXPECT_EQ(registry.RenderPrometheus(),
            "# HELP esc line1\\nline2 \\\\ end\n"
            "# TYPE esc gauge\n"
            "esc{path=\"a\\\"b\\\\c\\nd\"} NaN\n");
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry registry;
  Counter* counter = registry.AddCounter("c_total", "c");
  Histogram* histogram = registry.AddHistogram("h", "h", LatencyBuckets());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter->Increment();
        histogram->Observe(0.003);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter->value(), 40000.0);
  const Histogram::Snapshot snapshot = histogram->Read();
  EXPECT_EQ(snapshot.count, 40000u);
  EXPECT_EQ(snapshot.cumulative_counts[1], 0u);      // le 0.0025
  EXPECT_EQ(snapshot.cumulative_counts[2], 40000u);  // le 0.005
}

}  // namespace
}  // namespace bitfleet::coordinator

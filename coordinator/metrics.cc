#include "coordinator/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/logging.h"

namespace bitfleet::coordinator {
namespace {

enum Type { kCounter = 0, kGauge = 1, kHistogram = 2 };

const char* TypeName(int type) {
  switch (type) {
    case kCounter:
      return "counter";
    case kGauge:
      return "gauge";
    default:
      return "histogram";
  }
}

void AtomicAdd(std::atomic<double>& target, double delta) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

// Shortest round-trip text, and the exposition format's spellings of the special values.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return ec == std::errc() ? std::string(buffer, end) : "NaN";
}

// Label values escape backslash, double quote and newline; HELP text backslash and newline.
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="x",b="y"} with `extra` (e.g. le) appended; "" when there are no labels at all.
std::string LabelText(const MetricLabels& labels, const std::pair<std::string, std::string>* extra = nullptr) {
  if (labels.empty() && extra == nullptr) return "";
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::pair<std::string, std::string>& label) {
    if (!first) out += ",";
    first = false;
    out += label.first + "=\"" + Escape(label.second, true) + "\"";
  };
  for (const auto& label : labels) add(label);
  if (extra != nullptr) add(*extra);
  out += "}";
  return out;
}

}  // namespace

void Counter::Increment(double delta) {
  if (delta > 0) AtomicAdd(value_, delta);
}

void Gauge::Add(double delta) { AtomicAdd(value_, delta); }

Histogram::Histogram(std::vector<double> upper_bounds) : upper_bounds_(std::move(upper_bounds)) {
  std::sort(upper_bounds_.begin(), upper_bounds_.end());
  upper_bounds_.erase(std::unique(upper_bounds_.begin(), upper_bounds_.end()), upper_bounds_.end());
  bucket_counts_ = std::make_unique<std::atomic<uint64_t>[]>(upper_bounds_.size() + 1);
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) bucket_counts_[i].store(0);
}

void Histogram::Observe(double value) {
  // Prometheus buckets are inclusive upper bounds (le).
  const size_t bucket = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin();
  bucket_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, value);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += bucket_counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts.push_back(running);
  }
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  // The bucket total, not count_: a concurrent Observe may sit between the two increments, and
  // the exposition must keep _count equal to the +Inf bucket.
  snapshot.count = running;
  return snapshot;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0};
}

struct MetricsRegistry::Series {
  int type = kCounter;
  MetricLabels labels;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;
};

struct MetricsRegistry::Family {
  std::string name;
  std::string help;
  int type = kCounter;
  std::vector<std::unique_ptr<Series>> series;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Series* MetricsRegistry::FindOrAdd(const std::string& name, const std::string& help, int type,
                                                    const MetricLabels& labels,
                                                    const std::vector<double>* upper_bounds) {
  auto make = [&]() {
    auto series = std::make_unique<Series>();
    series->type = type;
    series->labels = labels;
    if (type == kCounter) series->counter = std::make_unique<Counter>();
    if (type == kGauge) series->gauge = std::make_unique<Gauge>();
    if (type == kHistogram) series->histogram = std::make_unique<Histogram>(*upper_bounds);
    return series;
  };
  std::lock_guard<std::mutex> lock(mu_);
  bool labels_ok = true;
  for (const auto& label : labels) labels_ok = labels_ok && ValidName(label.first, false) && label.first != "le";
  Family* family = nullptr;
  for (auto& f : families_) {
    if (f->name == name) family = f.get();
  }
  if (!ValidName(name, true) || !labels_ok || (family != nullptr && family->type != type)) {
    Logger("metrics")->error("metric '{}' ({}) rejected: bad name or label, or registered with another type", name,
                             TypeName(type));
    detached_.push_back(make());
    return detached_.back().get();
  }
  if (family == nullptr) {
    families_.push_back(std::make_unique<Family>());
    family = families_.back().get();
    family->name = name;
    family->help = help;
    family->type = type;
  }
  for (auto& series : family->series) {
    if (series->labels == labels) return series.get();
  }
  family->series.push_back(make());
  return family->series.back().get();
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help, const MetricLabels& labels) {
  return FindOrAdd(name, help, kCounter, labels, nullptr)->counter.get();
}

Gauge* MetricsRegistry::AddGauge(const std::string& name, const std::string& help, const MetricLabels& labels) {
  return FindOrAdd(name, help, kGauge, labels, nullptr)->gauge.get();
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> upper_bounds, const MetricLabels& labels) {
  return FindOrAdd(name, help, kHistogram, labels, &upper_bounds)->histogram.get();
}

std::string MetricsRegistry::RenderPrometheus() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& family : families_) {
    out += "# HELP " + family->name + " " + Escape(family->help, false) + "\n";
    out += "# TYPE " + family->name + " " + TypeName(family->type) + "\n";
    for (const auto& series : family->series) {
      if (series->type == kCounter) {
        out += family->name + LabelText(series->labels) + " " + FormatValue(series->counter->value()) + "\n";
      } else if (series->type == kGauge) {
        out += family->name + LabelText(series->labels) + " " + FormatValue(series->gauge->value()) + "\n";
      } else {
        const Histogram::Snapshot h = series->histogram->Read();
        for (size_t i = 0; i < h.cumulative_counts.size(); ++i) {
          const std::pair<std::string, std::string> le{
              "le", i < h.upper_bounds.size() ? FormatValue(h.upper_bounds[i]) : "+Inf"};
          out += family->name + "_bucket" + LabelText(series->labels, &le) + " " +
                 std::to_string(h.cumulative_counts[i]) + "\n";
        }
        out += family->name + "_sum" + LabelText(series->labels) + " " + FormatValue(h.sum) + "\n";
        out += family->name + "_count" + LabelText(series->labels) + " " + std::to_string(h.count) + "\n";
      }
    }
  }
  return out;
}

}  // namespace bitfleet::coordinator

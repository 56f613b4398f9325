#include "worker/eval_metrics.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"

namespace bitfleet::worker {

int32_t LogSoftmax(std::span<const float> logits, std::vector<double>* out) {
  const int32_t best = static_cast<int32_t>(kernels::ArgMax(logits.data(), static_cast<int64_t>(logits.size())));
  const double max = logits.empty() ? 0.0 : logits[best];
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  const double log_z = max + std::log(sum);
  out->resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) (*out)[i] = static_cast<double>(logits[i]) - log_z;
  return best;
}

double Percentile(const std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  if (fraction <= 0) return sorted.front();
  if (fraction >= 1) return sorted.back();
  const double p = fraction * static_cast<double>(sorted.size() - 1);
  const size_t i = static_cast<size_t>(p);
  const double w = p - static_cast<double>(i);
  return (1 - w) * sorted[i] + w * sorted[std::min(i + 1, sorted.size() - 1)];
}

void EvalAccumulator::AddLogprob(double logprob) {
  nll_sum_ -= logprob;
  ++count_;
}

void EvalAccumulator::Add(std::span<const float> logits, int32_t next_token, std::span<const float> reference) {
  const int32_t top = LogSoftmax(logits, &log_probs_);
  nll_sum_ -= log_probs_[next_token];
  ++count_;
  if (reference.empty()) return;
  const int32_t ref_top = LogSoftmax(reference, &ref_log_probs_);
  reference_nll_sum_ -= ref_log_probs_[next_token];
  double kld = 0;
  for (size_t v = 0; v < ref_log_probs_.size(); ++v) {
    kld += std::exp(ref_log_probs_[v]) * (ref_log_probs_[v] - log_probs_[v]);
  }
  kld_.push_back(kld);
  if (top == ref_top) ++same_top_;
}

EvalSummary EvalAccumulator::Summary() const {
  EvalSummary s;
  s.tokens = count_;
  if (count_ == 0) return s;
  s.nll_mean = nll_sum_ / count_;
  s.perplexity = std::exp(s.nll_mean);
  if (kld_.empty()) return s;
  s.has_reference = true;
  s.reference_perplexity = std::exp(reference_nll_sum_ / count_);
  std::vector<double> sorted = kld_;
  std::sort(sorted.begin(), sorted.end());
  double sum = 0;
  for (double k : sorted) sum += k;
  s.kld_mean = sum / sorted.size();
  s.kld_median = Percentile(sorted, 0.5);
  s.kld_p99 = Percentile(sorted, 0.99);
  s.kld_max = sorted.back();
  s.top1_agreement = static_cast<double>(same_top_) / count_;
  return s;
}

}  // namespace bitfleet::worker

#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/bit_set.h"
#include "kernels/ops.h"

namespace bitfleet::worker {
namespace {

bool InRange(float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

Status ValidateSamplingParams(const SamplingParams& p, int32_t n_vocab) {
  if (!InRange(p.temperature, 0.0f, 100.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be in [0, 100], got ", p.temperature));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!InRange(p.top_p, 0.0f, 1.0f) || p.top_p == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (!InRange(p.min_p, 0.0f, 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", p.min_p));
  }
  if (!InRange(p.repeat_penalty, 0.0f, 10.0f) || p.repeat_penalty == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("repeat_penalty must be in (0, 10], got ", p.repeat_penalty));
  }
  if (!InRange(p.presence_penalty, -2.0f, 2.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("presence_penalty must be in [-2, 2], got ", p.presence_penalty));
  }
  if (!InRange(p.frequency_penalty, -2.0f, 2.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frequency_penalty must be in [-2, 2], got ", p.frequency_penalty));
  }
  if (p.penalty_last_n < -1) {
    return absl::InvalidArgumentError(absl::StrCat("penalty_last_n must be >= -1, got ", p.penalty_last_n));
  }
  if (p.logit_bias.size() > kMaxLogitBiasEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat("logit_bias has ", p.logit_bias.size(), " entries; at most ", kMaxLogitBiasEntries));
  }
  if (!p.allowed_tokens.empty()) {
    const size_t words = (static_cast<size_t>(n_vocab) + 63) / 64;
    if (n_vocab != INT32_MAX && p.allowed_tokens.size() != words) {
      return absl::InvalidArgumentError(absl::StrCat("allowed_tokens has ", p.allowed_tokens.size(),
                                                     " words; the vocabulary of ", n_vocab, " needs ", words));
    }
    const int64_t bits = std::min<int64_t>(n_vocab, static_cast<int64_t>(p.allowed_tokens.size()) * 64);
    bool any = false;
    for (int64_t t = 0; t < bits && !any; ++t) any = BitIsSet(p.allowed_tokens, t);
    if (!any) return absl::InvalidArgumentError("allowed_tokens allows no token");
  }
  for (size_t i = 0; i < p.logit_bias.size(); ++i) {
    const LogitBias& b = p.logit_bias[i];
    if (b.token < 0 || b.token >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias token ", b.token, " is outside the vocabulary"));
    }
    if (i > 0 && b.token <= p.logit_bias[i - 1].token) {
      return absl::InvalidArgumentError("logit_bias tokens must be distinct and in ascending order");
    }
    if (!InRange(b.bias, -kMaxLogitBiasMagnitude, kMaxLogitBiasMagnitude)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias of token ", b.token, " must be in [-100, 100], got ", b.bias));
    }
  }
  return absl::OkStatus();
}

void ApplyBiasAndMask(std::span<float> slice, int64_t vocab_begin, const SamplingParams& params) {
  const int64_t size = static_cast<int64_t>(slice.size());
  for (const LogitBias& b : params.logit_bias) {
    const int64_t local = b.token - vocab_begin;
    if (local >= 0 && local < size) slice[static_cast<size_t>(local)] += b.bias;
  }
  if (params.allowed_tokens.empty()) return;
  for (int64_t local = 0; local < size; ++local) {
    if (!BitIsSet(params.allowed_tokens, vocab_begin + local)) slice[static_cast<size_t>(local)] = -INFINITY;
  }
}

Sampler::Sampler(int32_t n_vocab)
    : n_vocab_(std::max<int32_t>(1, n_vocab)),
      work_(n_vocab_),
      candidates_(n_vocab_),
      probs_(n_vocab_),
      counts_(n_vocab_, 0) {
  touched_.reserve(n_vocab_);
}

void Sampler::ApplyPenalties(std::span<const float> logits, std::span<const int32_t> history,
                             const SamplingParams& params) {
  // A short row (caller bug) never reads out of bounds: missing tokens get -inf.
  const size_t given = std::min(logits.size(), static_cast<size_t>(n_vocab_));
  std::copy(logits.begin(), logits.begin() + given, work_.begin());
  std::fill(work_.begin() + given, work_.end(), -INFINITY);
  ApplyBiasAndMask(work_, 0, params);
  const bool any_penalty =
      params.repeat_penalty != 1.0f || params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f;
  if (!any_penalty || params.penalty_last_n == 0 || history.empty()) return;
  size_t window = history.size();
  if (params.penalty_last_n > 0) window = std::min(window, static_cast<size_t>(params.penalty_last_n));
  for (int32_t token : history.subspan(history.size() - window)) {
    if (token < 0 || token >= n_vocab_) continue;
    if (counts_[token]++ == 0) touched_.push_back(token);
  }
  for (int32_t token : touched_) {
    work_[token] = PenalizedLogit(work_[token], counts_[token], params);
    counts_[token] = 0;
  }
  touched_.clear();
}

int32_t Sampler::ArgMax() const { return static_cast<int32_t>(kernels::ArgMax(work_.data(), n_vocab_)); }

void Sampler::Filter(const SamplingParams& params) {
  const float* w = work_.data();
  // Strict total order: higher logit first, then lower id. Makes partial sorts deterministic.
  auto better = [w](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
  std::iota(candidates_.begin(), candidates_.end(), 0);
  size_t n = static_cast<size_t>(n_vocab_);
  const bool top_k = params.top_k > 0 && params.top_k < n_vocab_;
  const bool sorted = top_k || params.top_p < 1.0f || params.min_p > 0.0f;
  if (top_k) {
    n = static_cast<size_t>(params.top_k);
    std::nth_element(candidates_.begin(), candidates_.begin() + (n - 1), candidates_.end(), better);
  }
  if (sorted) std::sort(candidates_.begin(), candidates_.begin() + n, better);

  // Untempered probabilities of the survivors (for top-p and min-p).
  float max_logit = w[candidates_[0]];
  if (!sorted) {
    for (size_t i = 1; i < n; ++i) max_logit = std::max(max_logit, w[candidates_[i]]);
  }
  if (params.top_p < 1.0f || params.min_p > 0.0f) {
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      probs_[i] = std::exp(w[candidates_[i]] - max_logit);
      sum += probs_[i];
    }
    if (params.top_p < 1.0f) {
      double cumulative = 0.0;
      size_t keep = n;
      for (size_t i = 0; i < n; ++i) {
        cumulative += probs_[i] / sum;
        if (cumulative >= params.top_p) {
          keep = i + 1;
          break;
        }
      }
      n = keep;
    }
    if (params.min_p > 0.0f) {
      const float threshold = params.min_p * probs_[0];  // probs_[0] is the top (sorted)
      size_t keep = 1;
      while (keep < n && probs_[keep] >= threshold) ++keep;
      n = keep;
    }
  }

  // Tempered distribution over the survivors.
  const float inv_temp = 1.0f / params.temperature;
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    probs_[i] = std::exp((w[candidates_[i]] - max_logit) * inv_temp);
    sum += probs_[i];
  }
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (size_t i = 0; i < n; ++i) probs_[i] *= inv_sum;
  n_candidates_ = n;
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history,
                        const SamplingParams& params, Rng& rng) {
  ApplyPenalties(logits, history, params);
  if (params.greedy()) return ArgMax();
  Filter(params);
  const double u = rng.Uniform();
  double cumulative = 0.0;
  for (size_t i = 0; i < n_candidates_; ++i) {
    cumulative += probs_[i];
    if (u < cumulative) return candidates_[i];
  }
  // Rounding left u above the total: the last candidate that has any probability (a masked or
  // -inf token never is one; the best candidate always has some).
  size_t last = n_candidates_ - 1;
  while (last > 0 && !(probs_[last] > 0.0f)) --last;
  return candidates_[last];
}

std::vector<std::pair<int32_t, float>> Sampler::Distribution(std::span<const float> logits,
                                                             std::span<const int32_t> history,
                                                             const SamplingParams& params) {
  ApplyPenalties(logits, history, params);
  if (params.greedy()) return {{ArgMax(), 1.0f}};
  Filter(params);
  std::vector<std::pair<int32_t, float>> out;
  out.reserve(n_candidates_);
  for (size_t i = 0; i < n_candidates_; ++i) out.emplace_back(candidates_[i], probs_[i]);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  return out;
}

}  // namespace bitfleet::worker

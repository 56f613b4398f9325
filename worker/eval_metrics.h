// Quality statistics of next-token predictions, with the definitions of llama.cpp's
// perplexity tool (--kl-divergence):
//   perplexity   = exp(mean over scored tokens of -log softmax(logits)[actual next token])
//   KL divergence per token = sum_v p_ref(v) * (log p_ref(v) - log p(v)), i.e. KL(ref || model),
//                  with p_ref the reference ("base") model's distribution
//   top-1 agreement = fraction of tokens where argmax(logits) == argmax(reference logits)
//   percentiles  = linear interpolation between sorted values at fraction * (count - 1)
// Differences from llama.cpp, both on the side of exactness: probabilities come from the
// reference's float logits directly (llama.cpp stores the base log-probs quantized to 16 bits
// and skips p_base below e^-16), and sums are in double.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace bitfleet::worker {

struct EvalSummary {
  int64_t tokens = 0;            // scored predictions
  double perplexity = 0;
  double nll_mean = 0;           // mean negative log-likelihood (nats)
  bool has_reference = false;
  double reference_perplexity = 0;
  double kld_mean = 0;
  double kld_median = 0;
  double kld_p99 = 0;
  double kld_max = 0;
  double top1_agreement = 0;     // in [0, 1]
};

class EvalAccumulator {
 public:
  // Scores one prediction: `logits` predicted `next_token`. `reference` (same vocabulary) adds
  // the KL and top-1 statistics; pass it for every token or for none.
  void Add(std::span<const float> logits, int32_t next_token, std::span<const float> reference = {});
  // Scores one prediction whose log probability of the actual next token is known (a server's
  // prompt log probabilities); no reference statistics.
  void AddLogprob(double logprob);
  EvalSummary Summary() const;

 private:
  int64_t count_ = 0;
  double nll_sum_ = 0;
  double reference_nll_sum_ = 0;
  int64_t same_top_ = 0;
  std::vector<double> kld_;  // per scored token (with a reference)
  std::vector<double> log_probs_;  // scratch
  std::vector<double> ref_log_probs_;
};

// Log-softmax of `logits` into `out` (double); returns the index of the largest logit (the
// lowest on ties, NaNs skipped: kernels::ArgMax).
int32_t LogSoftmax(std::span<const float> logits, std::vector<double>* out);

// llama.cpp's percentile of sorted values: interpolation at fraction * (n - 1).
double Percentile(const std::vector<double>& sorted, double fraction);

}  // namespace bitfleet::worker

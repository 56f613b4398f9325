// Next-token sampling from one row of logits.
//
// Semantics (applied in this order, as llama.cpp's default sampler chain does):
//  0. logit_bias: each listed token's logit += its bias (OpenAI's logit_bias); then tokens outside
//     allowed_tokens (constrained decoding, when given) get -inf.
//  1. Penalties over the last `penalty_last_n` tokens of `history` (0: off, -1: all of it):
//     repetition (CTRL): a seen token's logit is divided by repeat_penalty when positive and
//     multiplied by it when negative; frequency: logit -= count * frequency_penalty;
//     presence: logit -= presence_penalty once per seen token.
//  2. temperature <= 0: greedy — the highest logit wins (ties: the lowest token id). Stop.
//  3. top_k (> 0): keep the k highest logits (ties broken by lower token id).
//  4. top_p (< 1): keep the smallest most-probable prefix whose probability mass, computed
//     from the untempered logits of the survivors, reaches top_p (always at least one token).
//  5. min_p (> 0): drop tokens whose probability is below min_p × the top probability.
//  6. Sample from softmax(logit / temperature) over the survivors with the caller's Rng.
// All choices are deterministic functions of (logits, history, params, rng state), so the
// same seed reproduces the same tokens on every platform.
//
// Thread-safety: a Sampler owns scratch sized for the vocabulary; use one per thread. The RNG
// state lives in the caller's Rng (one per sequence), so one Sampler serves many sequences.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "core/status.h"
#include "worker/rng.h"

namespace bitfleet::worker {

struct LogitBias {
  int32_t token = 0;
  float bias = 0.0f;
};

// Bounds of SamplingParams::logit_bias (OpenAI's value range; a generous entry count).
inline constexpr size_t kMaxLogitBiasEntries = 1024;
inline constexpr float kMaxLogitBiasMagnitude = 100.0f;

struct SamplingParams {
  float temperature = 1.0f;        // 0: greedy
  int32_t top_k = 0;               // 0: off
  float top_p = 1.0f;              // 1: off
  float min_p = 0.0f;              // 0: off
  float repeat_penalty = 1.0f;     // 1: off
  float presence_penalty = 0.0f;   // 0: off
  float frequency_penalty = 0.0f;  // 0: off
  int32_t penalty_last_n = 64;     // history window for the penalties; 0: off, -1: all
  uint64_t seed = 0;
  std::vector<LogitBias> logit_bias;  // distinct tokens in ascending order
  // Constrained decoding: token t may be sampled only if bit t % 64 of word t / 64 is set; empty:
  // any token. Not owned: the caller keeps it alive across the call.
  std::span<const uint64_t> allowed_tokens;

  bool greedy() const { return temperature <= 0.0f; }
};

// INVALID_ARGUMENT naming the first bad field: non-finite values, temperature outside
// [0, 100], top_k < 0, top_p outside (0, 1], min_p outside [0, 1], repeat_penalty outside
// (0, 10], presence/frequency penalties outside [-2, 2], penalty_last_n < -1, more than
// kMaxLogitBiasEntries biases, a bias outside [-100, 100], bias tokens not distinct and ascending
// or outside [0, n_vocab), allowed_tokens not (n_vocab + 63) / 64 words (when n_vocab is given)
// or allowing no token.
Status ValidateSamplingParams(const SamplingParams& params, int32_t n_vocab = INT32_MAX);

// Step 0 of the semantics above on a vocabulary slice: `slice[j]` is token vocab_begin + j's
// logit. The one code of the single-rank sampler (the whole row) and the distributed one (each
// rank's slice), so they pick the same tokens.
void ApplyBiasAndMask(std::span<float> slice, int64_t vocab_begin, const SamplingParams& params);

// A logit after the repetition, frequency and presence penalties for a token seen `count` (> 0)
// times in the penalty window. The one formula of the single-rank and distributed samplers, so
// they pick the same tokens.
inline float PenalizedLogit(float logit, uint32_t count, const SamplingParams& p) {
  logit = logit > 0.0f ? logit / p.repeat_penalty : logit * p.repeat_penalty;
  return logit - (static_cast<float>(count) * p.frequency_penalty + p.presence_penalty);
}

class Sampler {
 public:
  explicit Sampler(int32_t n_vocab);

  int32_t n_vocab() const { return n_vocab_; }

  // Picks the next token from `logits` (n_vocab values). `history` is the sequence so far
  // (prompt and generated tokens) for the penalties. `params` must have been validated.
  // Does not allocate.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> history, const SamplingParams& params,
                 Rng& rng);

  // The distribution Sample draws from after filtering (token, probability), highest first;
  // for tests and debugging. Greedy gives the single winner with probability 1.
  std::vector<std::pair<int32_t, float>> Distribution(std::span<const float> logits,
                                                      std::span<const int32_t> history,
                                                      const SamplingParams& params);

 private:
  // Copies logits into work_ and applies the logit biases and the penalties.
  void ApplyPenalties(std::span<const float> logits, std::span<const int32_t> history, const SamplingParams& params);
  // Greedy choice over work_: the lowest id of the largest logit, NaNs skipped (kernels::ArgMax).
  int32_t ArgMax() const;
  // Fills candidates_/probs_ with the survivors of top-k/top-p/min-p, sorted best first
  // (or all tokens in id order when no filter is active), probs_ tempered and normalized.
  void Filter(const SamplingParams& params);

  int32_t n_vocab_;
  std::vector<float> work_;            // penalized logits
  std::vector<int32_t> candidates_;    // surviving token ids
  std::vector<float> probs_;           // their probabilities (parallel to candidates_)
  size_t n_candidates_ = 0;
  std::vector<uint32_t> counts_;       // occurrences per token inside the penalty window
  std::vector<int32_t> touched_;       // tokens with counts_ > 0 (to reset them cheaply)
};

}  // namespace bitfleet::worker

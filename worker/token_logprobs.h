// Log probabilities of sampled tokens, for the APIs' `logprobs`: the log-softmax of the model's
// raw logits, before penalties, temperature and the top-k / top-p / min-p filters. That is the
// model's own distribution (what OpenAI and vLLM report), so the numbers do not depend on the
// sampling parameters and a greedy and a sampled request see the same values.
//
// A row may be split over ranks (a vocab-parallel LM head): each rank summarizes its slice
// (SummarizeSlice: max, sum of exponentials, the sampled token's logit if it holds it, its best
// candidates), and the merge of all summaries gives the whole row's answer. Whole rows are the
// one-slice case. The sums of exponentials use the softmax kernels' vector exp, in float lanes
// over blocks of 1024 added in double (a 49k-vocabulary row in ~0.1 ms, against ~0.5 ms for
// exp in double); a log probability is within ~2e-6 of exact arithmetic in every CPU variant.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "sharding/communicator.h"

namespace bitfleet::worker {

// The most alternatives a request may ask for (OpenAI's top_logprobs bound).
inline constexpr int kMaxTopLogprobs = 20;

struct TopLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct TokenLogprobs {
  float logprob = 0.0f;         // of the sampled token
  std::vector<TopLogprob> top;  // the most likely tokens, best first (ties: lower id)
};

// One slice's part of a row. `top` holds logits, not log probabilities, until the merge.
struct LogprobSlice {
  float max = 0.0f;          // largest logit (NaNs skipped); -inf when none
  double sum_exp = 0.0;      // sum of exp(logit - max) over the slice (NaN when a logit is NaN)
  bool has_token = false;    // the sampled token is in this slice
  float token_logit = 0.0f;  // its logit, when has_token
  std::vector<TopLogprob> top;
};

// `logits` holds tokens [vocab_begin, vocab_begin + logits.size()); `top_n` in [0, kMaxTopLogprobs].
LogprobSlice SummarizeSlice(std::span<const float> logits, int32_t vocab_begin, int32_t token, int top_n);

// The whole row from the summaries of all its slices (each token in exactly one). A NaN logit
// makes every log probability NaN; a token in no slice gets NaN.
TokenLogprobs MergeSlices(std::span<const LogprobSlice> slices, int top_n);

// A whole row: MergeSlices of its one slice.
TokenLogprobs ComputeLogprobs(std::span<const float> logits, int32_t token, int top_n);

// One sequence's request for log probabilities across a group.
struct ShardedLogprobRow {
  std::span<const float> logits;  // this rank's slice: token vocab_begin + j at index j
  int32_t token = -1;             // the token sampled for the row (the same on every rank)
  int top_n = 0;
};

// Collective over `comm` (one all-gather, every rank calling with the same rows in the same
// order): out[i] = the log probabilities of rows[i] over the whole vocabulary, identical on
// every rank. INVALID_ARGUMENT for a top_n out of range (all ranks see the same rows, so all
// fail alike); communicator errors pass through.
// `pool` (optional) summarizes the rows in parallel.
Status ShardedLogprobs(sharding::Communicator& comm, int32_t vocab_begin, std::span<const ShardedLogprobRow> rows,
                       std::vector<TokenLogprobs>* out, ThreadPool* pool = nullptr);

// Whole rows (a communicator of one, or gathered logits): out[i] for rows[i], in parallel over
// `pool` when given.
void WholeRowLogprobs(std::span<const ShardedLogprobRow> rows, std::vector<TokenLogprobs>* out,
                      ThreadPool* pool = nullptr);

}  // namespace bitfleet::worker

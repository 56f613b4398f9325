// Sampling over a vocab-parallel LM head without gathering whole logit rows (DESIGN.md §3, §4).
//
// Under tensor parallelism each rank holds the logits of its vocabulary slice
// (ModelRunner::vocab_slice()). DistributedSampler picks the next token of every sequence of a
// step with a few small collectives and gives every rank the same token ids, implementing
// exactly the semantics of worker/sampler.h (penalties, greedy, top-k, top-p, min-p,
// temperature; same order, same tie-breaking, one rng.Uniform() per non-greedy draw):
//
// - greedy: each rank sends its best (logit, id); the best of those wins (ties: lowest id).
// - top-k: each rank sends its k best candidates; the merge holds the global top k, on which
//   top-p / min-p / temperature run exactly as in Sampler.
// - top-p / min-p without top-k: ranks send their best c candidates (c = 64, then x4 per extra
//   round) plus the softmax mass of their whole slice, until the merged list provably holds
//   every token of the surviving prefix (no unsent token can outrank it).
// - temperature alone: ranks send their max and tempered softmax mass; the rank whose part of
//   the cumulative distribution (in token-id order, as Sampler walks it) holds the uniform draw
//   finds the token and shares it.
//
// Greedy and top-k give bit-identical tokens to Sampler on the gathered row. Top-p / min-p /
// plain temperature draw from the same distribution; only the softmax normaliser and prefix sums
// are added up in another order, so a token can differ from Sampler's only when the uniform draw
// (or the top-p cumulative) lands within float rounding (~1e-7 relative) of a boundary.
//
// Collectives per SampleBatch call, whatever the number of sequences: 1 all-gather for greedy /
// top-k, +1 when any row samples with temperature alone, +1 per extra top-p/min-p round.
//
// Contract: a collective. Every rank of the group calls SampleBatch with the same number of rows,
// in the same order, with the same history, params and RNG state per row; each rank passes its
// own logits slice. Not thread-safe (owns scratch); one per rank.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "sharding/communicator.h"
#include "worker/rng.h"
#include "worker/sampler.h"

namespace bitfleet::worker {

// One sequence's next-token choice as seen by one rank.
struct ShardedLogitsRow {
  std::span<const float> logits;     // this rank's slice: token vocab_begin + j at index j
  std::span<const int32_t> history;  // prompt and generated tokens so far (penalties)
  const SamplingParams* params = nullptr;  // validated (ValidateSamplingParams)
  Rng* rng = nullptr;                      // per sequence; advanced as Sampler::Sample does
};

class DistributedSampler {
 public:
  // This rank holds tokens [vocab_begin, vocab_begin + vocab_size) of n_vocab. `comm` is not
  // owned and must outlive the sampler. At TP=1 (a group of one) it samples like Sampler.
  DistributedSampler(sharding::Communicator& comm, int32_t n_vocab, int32_t vocab_begin, int32_t vocab_size);

  // Collective: tokens[i] = the token sampled for rows[i], identical on every rank.
  // INVALID_ARGUMENT when tokens is shorter than rows, a row's slice has the wrong width or a
  // row lacks params/rng (every rank sees the same rows, so all fail alike); communicator
  // errors (DEADLINE_EXCEEDED for a dead or hung peer) pass through.
  Status SampleBatch(std::span<const ShardedLogitsRow> rows, std::span<int32_t> tokens);

  // One row.
  StatusOr<int32_t> Sample(std::span<const float> logits, std::span<const int32_t> history,
                           const SamplingParams& params, Rng& rng);

  int32_t n_vocab() const { return n_vocab_; }
  int32_t vocab_begin() const { return vocab_begin_; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  enum class Mode { kGreedy, kTopK, kPrefix, kFull };
  struct Candidate {
    float value;
    int32_t id;
  };
  struct RowState {
    Mode mode = Mode::kGreedy;
    int64_t send = 0;  // candidates each rank sends this round
    bool done = false;
    bool await_owner = false;  // kFull: the owning rank reports the token in the last round
    int32_t token = -1;
  };

  // Copies row i's logits into penalized_ and applies the penalties to this slice.
  void Penalize(size_t i, const ShardedLogitsRow& row);
  const float* Penalized(size_t i) const { return penalized_.data() + i * static_cast<size_t>(vocab_size_); }
  // This rank's best `count` candidates of row i, best first, into local_.
  void LocalBest(size_t i, int64_t count);
  // Resolves row i from the merged candidates of a round (all ranks compute the same).
  void Resolve(size_t i, const ShardedLogitsRow& row, RowState& state, size_t row_offset, size_t record_bytes);
  // Draws from softmax(logit / T) over the first n of merged_ (best first).
  int32_t DrawFromPrefix(size_t n, const SamplingParams& params, Rng& rng);

  sharding::Communicator& comm_;
  int32_t n_vocab_;
  int32_t vocab_begin_;
  int32_t vocab_size_;
  std::vector<float> penalized_;       // rows × vocab_size
  std::vector<uint32_t> counts_;       // occurrences per local token in the penalty window
  std::vector<int32_t> touched_;       // local tokens with counts_ > 0
  std::vector<int32_t> order_;         // local indices, for partial sorts
  std::vector<Candidate> local_;       // this rank's best candidates of one row
  std::vector<Candidate> merged_;      // every rank's candidates of one row, best first
  std::vector<float> probs_;
  std::vector<RowState> states_;
  std::vector<size_t> offsets_;        // each row's offset in a round's record
  std::vector<double> mass_scratch_;   // per rank
  std::vector<uint8_t> send_;
  std::vector<uint8_t> recv_;
  std::vector<int32_t> owner_send_;
  std::vector<int32_t> owner_recv_;
};

}  // namespace bitfleet::worker

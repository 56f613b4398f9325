// Prompt log probabilities kept per full KV block (docs/scheduler.md, "Scored prompts"), so a
// scored request whose prompt begins like an earlier scored one reports that beginning's scores
// without computing them, and may then share its cached KV blocks. lm-evaluation-harness's
// multiple-choice tasks send one context with each of its continuations; OpenAI's `echo` with
// `n` choices scores one prompt n times.
//
// Block k's entry holds the scores of the prompt tokens *in* block k (positions [k·bs, (k+1)·bs),
// from 1 in block 0). Each is the log-softmax at the position before it, so a function of the
// tokens up to and including it: all of them named by block k's chained hash (tenant salt,
// model id, every token to the block's end; cache/block_hash.h). An entry therefore holds for
// any request with that hash, on any replica.
//
// An entry keeps the alternatives (top_logprobs) it was computed with and serves requests asking
// for as many or fewer: ties are ordered by token id, so the top k are the first k of the top n.
// Least recently used entries go first when the byte budget is reached.
//
// Not thread-safe: the scheduler's lock guards it.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

#include "cache/block_hash.h"
#include "coordinator/executor.h"

namespace bitfleet::coordinator {

class PromptScoreCache {
 public:
  // `max_bytes`: the budget of the kept scores (an estimate of their heap use); 0 keeps nothing.
  explicit PromptScoreCache(int64_t max_bytes);

  // The scores kept for block `hash` when they have at least `top_n` alternatives, each cut to
  // `top_n`; marks the entry recently used.
  std::optional<std::vector<ScoredToken>> Find(const cache::BlockHash& hash, int32_t top_n);
  // Keeps `scores` (block `hash`'s prompt tokens, computed with `top_n` alternatives) unless an
  // entry with as many alternatives or more is kept already (that one is marked recently used).
  // Evicts least recently used entries down to the budget; an entry over the whole budget is
  // not kept.
  void Insert(const cache::BlockHash& hash, int32_t top_n, std::vector<ScoredToken> scores);

  int64_t max_bytes() const { return max_bytes_; }
  int64_t bytes() const { return bytes_; }
  size_t size() const { return index_.size(); }

 private:
  struct Entry {
    cache::BlockHash hash;
    int32_t top_n = 0;
    std::vector<ScoredToken> scores;
    int64_t bytes = 0;
  };
  using Lru = std::list<Entry>;  // most recently used first

  void Erase(Lru::iterator it);

  const int64_t max_bytes_;
  int64_t bytes_ = 0;
  Lru lru_;
  std::unordered_map<cache::BlockHash, Lru::iterator, cache::BlockHashHasher> index_;
};

}  // namespace bitfleet::coordinator

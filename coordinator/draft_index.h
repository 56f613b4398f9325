// ProposeDraft for one growing sequence without scanning it (docs/scheduler.md, "Speculative
// decoding"): the latest end of every n-gram seen, indexed as tokens are appended. The scan costs
// ~1 ns a token (37 µs a step at 32k tokens, on the scheduler thread, between steps); a lookup
// here costs a hash probe per n-gram length. Below `scan_below` tokens the scan is cheaper than
// the index's memory (~30 bytes per token and n-gram length) and is used instead.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "coordinator/draft_proposer.h"

namespace bitfleet::coordinator {

class DraftIndex {
 public:
  static constexpr size_t kScanBelow = 4096;
  // Positions indexed per call at most (~0.25 µs each with two n-gram lengths).
  static constexpr size_t kIndexPerCall = 2048;
  // `hash_mask` narrows the n-gram hashes (tests force collisions with it: a colliding hit is
  // checked and then scanned for, so results never change).
  explicit DraftIndex(size_t scan_below = kScanBelow, size_t index_per_call = kIndexPerCall,
                      uint64_t hash_mask = ~uint64_t{0})
      : scan_below_(scan_below), index_per_call_(index_per_call), hash_mask_(hash_mask) {}

  // Exactly ProposeDraft(tokens, options, max_tokens, draft). `tokens` must extend the tokens of
  // every earlier call (a sequence's token list only grows); options must not change.
  void Propose(std::span<const int32_t> tokens, const DraftOptions& options, int32_t max_tokens,
               std::vector<int32_t>* draft);

 private:
  uint64_t Hash(std::span<const int32_t> ngram) const;
  // Indexes the n-grams that end at positions [indexed_, end).
  void IndexUpTo(std::span<const int32_t> tokens, size_t end);

  const size_t scan_below_;
  const size_t index_per_call_;
  const uint64_t hash_mask_;
  int32_t min_n_ = 0;
  // latest_[n - min_n_]: an n-gram's hash → the latest position it ends at.
  std::vector<absl::flat_hash_map<uint64_t, int64_t>> latest_;
  size_t indexed_ = 0;  // n-grams ending before this position are indexed
};

}  // namespace bitfleet::coordinator

#include "coordinator/draft_index.h"

#include <algorithm>

namespace bitfleet::coordinator {

uint64_t DraftIndex::Hash(std::span<const int32_t> ngram) const {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (int32_t t : ngram) {
    h ^= static_cast<uint32_t>(t);
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  }
  return h & hash_mask_;
}

void DraftIndex::IndexUpTo(std::span<const int32_t> tokens, size_t end) {
  for (size_t e = indexed_; e < end; ++e) {
    for (size_t k = 0; k < latest_.size(); ++k) {
      const size_t n = static_cast<size_t>(min_n_) + k;
      if (e + 1 < n) break;
      latest_[k][Hash(tokens.subspan(e + 1 - n, n))] = static_cast<int64_t>(e);
    }
  }
  indexed_ = std::max(indexed_, end);
}

void DraftIndex::Propose(std::span<const int32_t> tokens, const DraftOptions& options, int32_t max_tokens,
                         std::vector<int32_t>* draft) {
  draft->clear();
  if (max_tokens <= 0) return;
  if (tokens.size() < scan_below_) {
    ProposeDraft(tokens, options, max_tokens, draft);
    return;
  }
  if (latest_.empty()) {
    min_n_ = options.min_ngram;
    latest_.resize(static_cast<size_t>(options.max_ngram - options.min_ngram + 1));
  }
  // Matches must end before the last token (a token must follow them). A long sequence that
  // starts drafting is indexed over several steps (a 32k-token one would hold the scheduler
  // ~8 ms at once); the scan answers meanwhile.
  const size_t end = tokens.size() - 1;
  IndexUpTo(tokens, std::min(end, indexed_ + index_per_call_));
  if (indexed_ < end) {
    ProposeDraft(tokens, options, max_tokens, draft);
    return;
  }
  const int64_t size = static_cast<int64_t>(tokens.size());
  for (int64_t n = options.max_ngram; n >= options.min_ngram; --n) {
    if (size < n + 1) continue;
    const std::span<const int32_t> tail = tokens.subspan(static_cast<size_t>(size - n));
    const auto& latest = latest_[static_cast<size_t>(n - min_n_)];
    const auto it = latest.find(Hash(tail));
    if (it == latest.end()) continue;  // no n-gram with this hash: none equal to the tail
    int64_t start = it->second - n + 1;
    if (!std::equal(tail.begin(), tail.end(), tokens.begin() + start)) {
      start = LatestEarlierMatch(tokens, n);  // a hash collision: the scan decides
      if (start < 0) continue;
    }
    DraftFrom(tokens, start + n, max_tokens, draft);
    return;
  }
}

}  // namespace bitfleet::coordinator

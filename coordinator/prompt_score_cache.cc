#include "coordinator/prompt_score_cache.h"

#include <algorithm>
#include <utility>

namespace bitfleet::coordinator {
namespace {

// Heap use of one entry: the list node and index slot (estimated), the score vector and every
// alternatives vector. Capacities, not sizes: that is what the entry holds on to.
int64_t EntryBytes(const std::vector<ScoredToken>& scores) {
  constexpr int64_t kNodeAndIndex = 160;
  int64_t bytes = kNodeAndIndex + static_cast<int64_t>(scores.capacity() * sizeof(ScoredToken));
  for (const ScoredToken& s : scores) bytes += static_cast<int64_t>(s.top_logprobs.capacity() * sizeof(TokenLogprob));
  return bytes;
}

}  // namespace

PromptScoreCache::PromptScoreCache(int64_t max_bytes) : max_bytes_(std::max<int64_t>(0, max_bytes)) {}

std::optional<std::vector<ScoredToken>> PromptScoreCache::Find(const cache::BlockHash& hash, int32_t top_n) {
  auto found = index_.find(hash);
  if (found == index_.end() || found->second->top_n < top_n) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, found->second);
  std::vector<ScoredToken> scores = found->second->scores;
  for (ScoredToken& s : scores) {
    if (s.top_logprobs.size() > static_cast<size_t>(top_n)) s.top_logprobs.resize(static_cast<size_t>(top_n));
  }
  return scores;
}

void PromptScoreCache::Insert(const cache::BlockHash& hash, int32_t top_n, std::vector<ScoredToken> scores) {
  auto found = index_.find(hash);
  if (found != index_.end()) {
    if (found->second->top_n >= top_n) {
      lru_.splice(lru_.begin(), lru_, found->second);
      return;
    }
    Erase(found->second);
  }
  scores.shrink_to_fit();
  const int64_t bytes = EntryBytes(scores);
  if (bytes > max_bytes_) return;
  while (bytes_ + bytes > max_bytes_) Erase(std::prev(lru_.end()));
  lru_.push_front(Entry{hash, top_n, std::move(scores), bytes});
  index_.emplace(hash, lru_.begin());
  bytes_ += bytes;
}

void PromptScoreCache::Erase(Lru::iterator it) {
  bytes_ -= it->bytes;
  index_.erase(it->hash);
  lru_.erase(it);
}

}  // namespace bitfleet::coordinator

#include "model/tokenizer/word_cache.h"

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace bitfleet::tokenizer {

WordCache::Shard& WordCache::ShardOf(std::string_view word) const {
  const size_t hash = absl::Hash<absl::string_view>()(absl::string_view(word.data(), word.size()));
  return shards_[(hash >> 7) % kShards];  // high-ish bits: the map itself uses the low ones
}

bool WordCache::Lookup(std::string_view word, std::vector<TokenId>* out) const {
  if (word.size() > kMaxWordBytes) return false;
  Shard& shard = ShardOf(word);
  std::lock_guard<std::mutex> lock(shard.mutex);
  auto it = shard.entries.find(absl::string_view(word.data(), word.size()));
  if (it == shard.entries.end()) return false;
  out->insert(out->end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::Insert(std::string_view word, const TokenId* ids, size_t n_ids) {
  if (word.size() > kMaxWordBytes) return;
  Shard& shard = ShardOf(word);
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.entries.size() >= kMaxEntriesPerShard) shard.entries.clear();
  shard.entries.try_emplace(std::string(word), Ids(ids, ids + n_ids));
}

}  // namespace bitfleet::tokenizer

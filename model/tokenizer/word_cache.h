// A bounded, thread-safe cache of pre-tokenized word -> token ids for the BPE encoder. Natural
// text repeats words constantly, and a hit skips the whole merge loop. Sharded by hash, one
// mutex per shard, so concurrent Encode calls rarely contend; a full shard is simply cleared
// (no LRU bookkeeping on the hot path), which bounds memory whatever the input.
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

class WordCache {
 public:
  // Words longer than this are not cached (rare, and they would crowd out the common ones).
  static constexpr size_t kMaxWordBytes = 64;
  // Entries per shard before it is cleared; with 16 shards about 64k words, a few MB.
  static constexpr size_t kMaxEntriesPerShard = 4096;

  // Appends the cached ids of `word` to `out` and returns true, or returns false.
  bool Lookup(std::string_view word, std::vector<TokenId>* out) const;
  // Remembers `ids` as the encoding of `word` (ignored for words over kMaxWordBytes).
  void Insert(std::string_view word, const TokenId* ids, size_t n_ids);

 private:
  using Ids = absl::InlinedVector<TokenId, 4>;
  struct Shard {
    // std::mutex, not absl::Mutex: Debian's abseil build keeps deadlock detection on, which
    // made locking the dominant cost of a cache hit.
    std::mutex mutex;
    absl::flat_hash_map<std::string, Ids> entries;  // guarded by `mutex`
  };
  static constexpr size_t kShards = 16;
  Shard& ShardOf(std::string_view word) const;

  mutable std::array<Shard, kShards> shards_;
};

}  // namespace bitfleet::tokenizer

// The prefix registry of one replica: chained block hash (cache/block_hash.h) → the KV block
// holding exactly that content (DESIGN.md §6). A new sequence walks its prompt's hash chain
// through the registry and shares the blocks it finds instead of recomputing them.
//
// The registry maps both ways and is a bijection: a hash names at most one block and a block
// holds at most one hash. It knows nothing about ref counts: a registered block may be in use
// (shared by sequences) or free in the BlockPool (cached, evictable); the BlockManager erases a
// block's entry when the pool hands the block out for new content.
//
// Not thread-safe: owned by the replica's BlockManager on the scheduler thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "cache/block_hash.h"
#include "core/status.h"

namespace bitfleet::cache {

class PrefixRegistry {
 public:
  // `num_blocks`: the size of the pool whose block ids are registered.
  explicit PrefixRegistry(int32_t num_blocks);

  // The block registered under `hash`, if any.
  std::optional<int32_t> Find(const BlockHash& hash) const;
  // True when `block` holds a registered hash.
  bool HoldsBlock(int32_t block) const;
  // How many leading hashes of `chain` are registered: the replica's cached prefix in blocks.
  int32_t CountPrefix(std::span<const BlockHash> chain) const;

  // Registers `block` under `hash`. Returns false (and changes nothing) when the hash already
  // names a block (another sequence computed the same content first) or the block already holds
  // a hash. INVALID_ARGUMENT for a block id outside the pool.
  StatusOr<bool> Insert(const BlockHash& hash, int32_t block);
  // Forgets the hash `block` holds; returns whether it held one. Called when the block is
  // reallocated for new content (an eviction if it was cached).
  bool EraseBlock(int32_t block);
  void Clear();

  int32_t num_blocks() const { return static_cast<int32_t>(hash_of_block_.size()); }
  size_t size() const { return block_of_hash_.size(); }

  // Both directions agree and every block id is in range. INTERNAL naming the first mismatch.
  Status CheckConsistency() const;

 private:
  std::unordered_map<BlockHash, int32_t, BlockHashHasher> block_of_hash_;
  std::vector<std::optional<BlockHash>> hash_of_block_;  // indexed by block id
};

}  // namespace bitfleet::cache

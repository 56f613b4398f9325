// The block table of one sequence: the KV block ids holding its positions, in order
// (position p lives in block ids()[p / block_size], slot p % block_size). Pure metadata.
// Not thread-safe; owned by whoever schedules the sequence.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cache/block_pool.h"
#include "core/status.h"

namespace bitfleet::cache {

// Blocks needed to hold `n_tokens` positions (ceil division); 0 for n_tokens <= 0.
int64_t BlocksForTokens(int64_t n_tokens, int block_size);

// The most blocks a runner sizes its pool to from a memory budget: block ids are int32, and
// 2^24 blocks are far beyond any CPU's or device's memory.
inline constexpr uint64_t kMaxKvPoolBlocks = uint64_t{1} << 24;

class BlockTable {
 public:
  explicit BlockTable(int block_size) : block_size_(block_size) {}
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;
  BlockTable(BlockTable&&) = default;
  BlockTable& operator=(BlockTable&&) = default;

  int block_size() const { return block_size_; }
  std::span<const int32_t> ids() const { return ids_; }
  int64_t capacity_tokens() const { return static_cast<int64_t>(ids_.size()) * block_size_; }

  // Grows the table so it holds at least `n_tokens` positions, allocating the missing blocks
  // from `pool` all-or-nothing (RESOURCE_EXHAUSTED leaves the table unchanged).
  Status Reserve(BlockPool& pool, int64_t n_tokens);
  // Appends an already referenced block (e.g. a shared prefix block after pool.Acquire).
  void Append(int32_t block) { ids_.push_back(block); }
  // Releases every block to `pool` and empties the table.
  Status Release(BlockPool& pool);

 private:
  int block_size_;
  std::vector<int32_t> ids_;
};

}  // namespace bitfleet::cache

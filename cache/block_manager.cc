#include "cache/block_manager.h"

#include <algorithm>
#include <vector>

namespace bitfleet::cache {

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size)
    : block_size_(block_size), pool_(num_blocks), registry_(num_blocks) {}

BlockCounts BlockManager::Counts() const {
  BlockCounts counts;
  counts.total = pool_.num_blocks();
  counts.used = counts.total - pool_.num_free();
  counts.cached = num_cached_;
  counts.free = pool_.num_free() - num_cached_;
  return counts;
}

BlockCounts BlockManager::CountBlockByBlock() const {
  BlockCounts counts;
  counts.total = pool_.num_blocks();
  for (int32_t block = 0; block < counts.total; ++block) {
    if (pool_.ref_count(block) > 0) {
      ++counts.used;
    } else if (registry_.HoldsBlock(block)) {
      ++counts.cached;
    }
  }
  counts.free = counts.total - counts.used - counts.cached;
  return counts;
}

CachedPrefix BlockManager::PlanCachedPrefix(std::span<const BlockHash> chain, int32_t max_blocks) const {
  CachedPrefix prefix;
  const size_t limit = std::min(chain.size(), static_cast<size_t>(std::max<int32_t>(0, max_blocks)));
  for (size_t i = 0; i < limit; ++i) {
    std::optional<int32_t> block = registry_.Find(chain[i]);
    if (!block.has_value()) break;
    ++prefix.blocks;
    if (pool_.is_free(*block)) ++prefix.revived;
  }
  return prefix;
}

std::span<const int32_t> BlockManager::Table(uint64_t seq) const {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return {};
  return it->second.table.ids();
}

StatusOr<int32_t> BlockManager::AttachCachedPrefix(uint64_t seq, std::span<const BlockHash> chain,
                                                   int32_t max_blocks) {
  if (tables_.contains(seq)) {
    return absl::FailedPreconditionError(absl::StrCat("sequence ", seq, " already has a block table"));
  }
  SequenceBlocks& entry = tables_.emplace(seq, SequenceBlocks(block_size_)).first->second;
  const CachedPrefix prefix = PlanCachedPrefix(chain, max_blocks);
  for (int32_t i = 0; i < prefix.blocks; ++i) {
    const int32_t block = *registry_.Find(chain[i]);
    const bool revived = pool_.is_free(block);
    BF_RETURN_IF_ERROR(pool_.Acquire(block));
    if (revived) --num_cached_;
    entry.table.Append(block);
  }
  // The attached blocks are registered already: RegisterFullBlocks starts after them.
  entry.registered = prefix.blocks;
  return prefix.blocks;
}

int32_t BlockManager::BlocksNeeded(uint64_t seq, int64_t n_tokens) const {
  const int64_t have = static_cast<int64_t>(Table(seq).size());
  return static_cast<int32_t>(std::max<int64_t>(0, BlocksForTokens(n_tokens, block_size_) - have));
}

Status BlockManager::Grow(uint64_t seq, int64_t n_tokens) {
  const int32_t needed = BlocksNeeded(seq, n_tokens);
  if (needed == 0) {
    tables_.try_emplace(seq, SequenceBlocks(block_size_));
    return absl::OkStatus();
  }
  if (needed > pool_.num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", needed, " more blocks needed, ",
                                                     pool_.num_free(), " free of ", pool_.num_blocks()));
  }
  SequenceBlocks& entry = tables_.try_emplace(seq, SequenceBlocks(block_size_)).first->second;
  for (int32_t i = 0; i < needed; ++i) {
    BF_ASSIGN_OR_RETURN(int32_t block, pool_.Allocate());
    // The block gets new content: whatever it cached is gone.
    if (registry_.EraseBlock(block)) {
      ++evictions_;
      --num_cached_;
    }
    entry.table.Append(block);
  }
  return absl::OkStatus();
}

Status BlockManager::RegisterFullBlocks(uint64_t seq, std::span<const BlockHash> chain) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return absl::NotFoundError(absl::StrCat("sequence ", seq, " has no block table"));
  SequenceBlocks& entry = it->second;
  std::span<const int32_t> ids = entry.table.ids();
  if (chain.size() > ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", seq, ": ", chain.size(), " block hashes for a table of ",
                                                   ids.size(), " blocks"));
  }
  for (size_t i = static_cast<size_t>(entry.registered); i < chain.size(); ++i) {
    // false: the content is registered under another block already; this copy stays private.
    BF_RETURN_IF_ERROR(registry_.Insert(chain[i], ids[i]).status());
  }
  entry.registered = std::max<int32_t>(entry.registered, static_cast<int32_t>(chain.size()));
  return absl::OkStatus();
}

Status BlockManager::Free(uint64_t seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return absl::OkStatus();
  // A registered block this table holds the last reference to becomes cached (a table names a
  // block at most once). Released last block first: a lookup walks a chain from its first block,
  // so evicting the chain's tail first keeps the longest prefix reachable. Unregistered blocks
  // (the partial last block, private copies) hold nothing to revive and are reused before any
  // cached block.
  Status status = absl::OkStatus();
  const std::span<const int32_t> ids = it->second.table.ids();
  for (auto block = ids.rbegin(); block != ids.rend() && status.ok(); ++block) {
    const bool registered = registry_.HoldsBlock(*block);
    if (pool_.ref_count(*block) == 1 && registered) ++num_cached_;
    status = pool_.Release(*block, /*keep=*/registered);
  }
  tables_.erase(it);
  return status;
}

void BlockManager::Reset() {
  const int32_t n = pool_.num_blocks();
  tables_.clear();
  pool_ = BlockPool(n);
  registry_.Clear();
  num_cached_ = 0;
}

Status BlockManager::CheckInvariants() const {
  const int32_t total = pool_.num_blocks();
  std::vector<int32_t> references(total, 0);
  for (const auto& [seq, entry] : tables_) {
    for (int32_t block : entry.table.ids()) {
      if (block < 0 || block >= total) {
        return absl::InternalError(absl::StrCat("sequence ", seq, " holds block id ", block, " outside the pool"));
      }
      ++references[block];
    }
  }
  for (int32_t block = 0; block < total; ++block) {
    const int32_t ref = pool_.ref_count(block);
    if (ref < 0) return absl::InternalError(absl::StrCat("block ", block, " has negative ref count ", ref));
    if (ref != references[block]) {
      return absl::InternalError(absl::StrCat("block ", block, " has ref count ", ref, " but ", references[block],
                                              " block-table references"));
    }
  }
  const BlockCounts counts = CountBlockByBlock();
  const BlockCounts fast = Counts();
  if (fast.used != counts.used || fast.cached != counts.cached || fast.free != counts.free) {
    return absl::InternalError(absl::StrCat("kept counts used ", fast.used, " cached ", fast.cached, " free ", fast.free,
                                            " differ from the block-by-block count used ", counts.used, " cached ",
                                            counts.cached, " free ", counts.free));
  }
  if (counts.free < 0 || counts.free + counts.used + counts.cached != counts.total) {
    return absl::InternalError(absl::StrCat("block counts: free ", counts.free, " + used ", counts.used, " + cached ",
                                            counts.cached, " != total ", counts.total));
  }
  if (pool_.num_free() != counts.free + counts.cached) {
    return absl::InternalError(absl::StrCat("pool free list holds ", pool_.num_free(), " blocks; expected free ",
                                            counts.free, " + cached ", counts.cached));
  }
  return registry_.CheckConsistency();
}

}  // namespace bitfleet::cache

#include "cache/prefix_registry.h"

#include <algorithm>

namespace bitfleet::cache {

PrefixRegistry::PrefixRegistry(int32_t num_blocks) : hash_of_block_(std::max<int32_t>(0, num_blocks)) {}

std::optional<int32_t> PrefixRegistry::Find(const BlockHash& hash) const {
  auto it = block_of_hash_.find(hash);
  if (it == block_of_hash_.end()) return std::nullopt;
  return it->second;
}

bool PrefixRegistry::HoldsBlock(int32_t block) const {
  return block >= 0 && block < num_blocks() && hash_of_block_[block].has_value();
}

int32_t PrefixRegistry::CountPrefix(std::span<const BlockHash> chain) const {
  int32_t n = 0;
  for (const BlockHash& hash : chain) {
    if (!block_of_hash_.contains(hash)) break;
    ++n;
  }
  return n;
}

StatusOr<bool> PrefixRegistry::Insert(const BlockHash& hash, int32_t block) {
  if (block < 0 || block >= num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix registry: block id ", block, " outside pool of ", num_blocks()));
  }
  if (hash_of_block_[block].has_value() || block_of_hash_.contains(hash)) return false;
  block_of_hash_.emplace(hash, block);
  hash_of_block_[block] = hash;
  return true;
}

bool PrefixRegistry::EraseBlock(int32_t block) {
  if (!HoldsBlock(block)) return false;
  block_of_hash_.erase(*hash_of_block_[block]);
  hash_of_block_[block].reset();
  return true;
}

void PrefixRegistry::Clear() {
  block_of_hash_.clear();
  std::fill(hash_of_block_.begin(), hash_of_block_.end(), std::nullopt);
}

Status PrefixRegistry::CheckConsistency() const {
  size_t held = 0;
  for (int32_t block = 0; block < num_blocks(); ++block) {
    if (!hash_of_block_[block].has_value()) continue;
    ++held;
    auto it = block_of_hash_.find(*hash_of_block_[block]);
    if (it == block_of_hash_.end() || it->second != block) {
      return absl::InternalError(absl::StrCat("prefix registry: block ", block, " holds hash ",
                                              BlockHashHex(*hash_of_block_[block]), " that does not map back to it"));
    }
  }
  if (held != block_of_hash_.size()) {
    return absl::InternalError(
        absl::StrCat("prefix registry: ", block_of_hash_.size(), " hashes but ", held, " blocks hold one"));
  }
  return absl::OkStatus();
}

}  // namespace bitfleet::cache

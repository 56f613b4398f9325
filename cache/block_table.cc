#include "cache/block_table.h"

namespace bitfleet::cache {

int64_t BlocksForTokens(int64_t n_tokens, int block_size) {
  if (n_tokens <= 0 || block_size <= 0) return 0;
  return (n_tokens + block_size - 1) / block_size;
}

Status BlockTable::Reserve(BlockPool& pool, int64_t n_tokens) {
  if (block_size_ <= 0) return absl::FailedPreconditionError("block table with a non-positive block size");
  const int64_t needed = BlocksForTokens(n_tokens, block_size_) - static_cast<int64_t>(ids_.size());
  if (needed <= 0) return absl::OkStatus();
  if (needed > pool.num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", needed, " more blocks needed for ",
                                                     n_tokens, " tokens, ", pool.num_free(), " free"));
  }
  return pool.AllocateMany(static_cast<int32_t>(needed), &ids_);
}

Status BlockTable::Release(BlockPool& pool) {
  Status status = pool.ReleaseAll(ids_);
  ids_.clear();
  return status;
}

}  // namespace bitfleet::cache

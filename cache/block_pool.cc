#include "cache/block_pool.h"

#include <algorithm>

namespace bitfleet::cache {

BlockPool::BlockPool(int32_t num_blocks) {
  const int32_t n = std::max<int32_t>(0, num_blocks);
  ref_counts_.assign(n, 0);
  prev_.assign(n, kNone);
  next_.assign(n, kNone);
  for (int32_t b = 0; b < n; ++b) PushFreeTail(b);
}

int32_t BlockPool::ref_count(int32_t block) const {
  if (block < 0 || block >= num_blocks()) return 0;
  return ref_counts_[block];
}

void BlockPool::PushFreeTail(int32_t block) {
  prev_[block] = tail_;
  next_[block] = kNone;
  if (tail_ != kNone) {
    next_[tail_] = block;
  } else {
    head_ = block;
  }
  tail_ = block;
  ++num_free_;
}

void BlockPool::PushFreeHead(int32_t block) {
  prev_[block] = kNone;
  next_[block] = head_;
  if (head_ != kNone) {
    prev_[head_] = block;
  } else {
    tail_ = block;
  }
  head_ = block;
  ++num_free_;
}

void BlockPool::Unlink(int32_t block) {
  const int32_t p = prev_[block];
  const int32_t n = next_[block];
  if (p != kNone) {
    next_[p] = n;
  } else {
    head_ = n;
  }
  if (n != kNone) {
    prev_[n] = p;
  } else {
    tail_ = p;
  }
  prev_[block] = next_[block] = kNone;
  --num_free_;
}

StatusOr<int32_t> BlockPool::Allocate() {
  if (head_ == kNone) {
    return absl::ResourceExhaustedError(absl::StrCat("KV block pool exhausted (", num_blocks(), " blocks)"));
  }
  const int32_t block = head_;
  Unlink(block);
  ref_counts_[block] = 1;
  return block;
}

Status BlockPool::AllocateMany(int32_t n, std::vector<int32_t>* out) {
  if (n < 0) return absl::InvalidArgumentError("negative block count");
  if (n > num_free_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV block pool: ", n, " blocks needed, ", num_free_, " free of ", num_blocks()));
  }
  for (int32_t i = 0; i < n; ++i) {
    BF_ASSIGN_OR_RETURN(int32_t block, Allocate());
    out->push_back(block);
  }
  return absl::OkStatus();
}

Status BlockPool::Acquire(int32_t block) {
  if (block < 0 || block >= num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("KV block id ", block, " outside pool of ", num_blocks()));
  }
  if (ref_counts_[block] == 0) Unlink(block);
  ++ref_counts_[block];
  return absl::OkStatus();
}

Status BlockPool::Release(int32_t block, bool keep) {
  if (block < 0 || block >= num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("KV block id ", block, " outside pool of ", num_blocks()));
  }
  if (ref_counts_[block] == 0) {
    return absl::InvalidArgumentError(absl::StrCat("KV block ", block, " released while free (double free)"));
  }
  if (--ref_counts_[block] == 0) {
    if (keep) {
      PushFreeTail(block);
    } else {
      PushFreeHead(block);
    }
  }
  return absl::OkStatus();
}

Status BlockPool::ReleaseAll(const std::vector<int32_t>& blocks) {
  for (int32_t block : blocks) BF_RETURN_IF_ERROR(Release(block));
  return absl::OkStatus();
}

}  // namespace bitfleet::cache

// Reference-counted pool of KV-cache block ids (DESIGN.md §6). Pure metadata: no device or
// kernel code, so the coordinator can own one per replica while workers own the storage.
//
// A block is either in use (ref count >= 1) or free (ref count 0). Free blocks sit on a free
// list that Allocate takes from the head. A released block whose content is worth keeping goes to
// the tail, so the list doubles as the LRU eviction order for cached prefix blocks (a prefix
// registry may revive a free block that still holds valid KV with Acquire before it is
// reallocated); one holding nothing reusable goes to the head, to be reused before any of them.
//
// Not thread-safe: one owner (the scheduler thread) mutates it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace bitfleet::cache {

class BlockPool {
 public:
  // Every block starts free. `num_blocks` must be >= 0 (negative counts as 0).
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return num_free_; }
  // Ref count of `block`; 0 for free or out-of-range ids.
  int32_t ref_count(int32_t block) const;
  bool is_free(int32_t block) const { return ref_count(block) == 0; }

  // Takes the least recently released free block with ref count 1. RESOURCE_EXHAUSTED when
  // none is free.
  StatusOr<int32_t> Allocate();
  // Allocates `n` blocks all-or-nothing and appends them to `out`.
  Status AllocateMany(int32_t n, std::vector<int32_t>* out);

  // Adds a reference to `block`. A free block is taken off the free list (prefix reuse);
  // INVALID_ARGUMENT for an id outside the pool.
  Status Acquire(int32_t block);
  // Drops one reference; at zero the block goes to the tail of the free list (`keep`: its
  // content may be revived, so it is reused last), or to the head (nothing worth keeping).
  // INVALID_ARGUMENT for an out-of-range or already free block (a double free).
  Status Release(int32_t block, bool keep = true);
  // Releases every block of `blocks` (stops at the first error).
  Status ReleaseAll(const std::vector<int32_t>& blocks);

 private:
  static constexpr int32_t kNone = -1;
  void PushFreeTail(int32_t block);
  void PushFreeHead(int32_t block);
  void Unlink(int32_t block);

  std::vector<int32_t> ref_counts_;
  // Intrusive doubly linked free list over block ids (valid only for free blocks).
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  int32_t head_ = kNone;
  int32_t tail_ = kNone;
  int32_t num_free_ = 0;
};

}  // namespace bitfleet::cache

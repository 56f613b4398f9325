// CPU storage of the paged KV cache of one rank: for every layer a K pool and a V pool of
// `num_blocks` blocks, each block `block_size` tokens × n_kv_heads × head_dim elements
// (DESIGN.md §6). Block ids index the pools directly and are the ids BlockPool hands out, so
// every rank of a replica uses the same ids for its own KV-head slice.
//
// Element type: IEEE f16 (the attention kernels read f16). KvType::kInt8 is reserved for an
// int8 cache with per-token scales and is rejected until the kernels support it.
//
// Thread-safety: the buffers are written by the forward pass of the worker that owns the
// storage; concurrent Steps on one storage are not allowed.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "core/status.h"
#include "kernels/ops.h"

namespace bitfleet::cache {

enum class KvType { kF16, kInt8 };

struct KvStorageOptions {
  int num_layers = 0;
  int n_kv_heads = 0;  // KV heads held by this rank
  int head_dim = 0;
  int num_blocks = 0;
  int block_size = 16;
  KvType type = KvType::kF16;
};

// Elements (f16) of one layer's K pool (the V pool is the same size), after checking the
// options: INVALID_ARGUMENT for non-positive sizes, RESOURCE_EXHAUSTED when the size overflows,
// UNIMPLEMENTED for kInt8. Shared by the host and device storages.
StatusOr<uint64_t> KvLayerPoolElements(const KvStorageOptions& options);

class KvStorage {
 public:
  // Allocates zeroed pools (pages are committed lazily by the OS as blocks are first written).
  // INVALID_ARGUMENT for non-positive sizes, RESOURCE_EXHAUSTED when the allocation fails or
  // the size overflows, UNIMPLEMENTED for kInt8.
  static StatusOr<std::unique_ptr<KvStorage>> Create(const KvStorageOptions& options);

  const KvStorageOptions& options() const { return options_; }
  int num_blocks() const { return options_.num_blocks; }
  int block_size() const { return options_.block_size; }
  // Bytes of all pools (K and V, every layer).
  uint64_t bytes() const { return static_cast<uint64_t>(layers_.size()) * 2 * layer_pool_bytes_; }

  // The kernel view of `layer`'s pools; layer must be in [0, num_layers).
  kernels::PagedKv Layer(int layer) const;

 private:
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  using Buffer = std::unique_ptr<uint16_t, FreeDeleter>;
  struct LayerPools {
    Buffer k;
    Buffer v;
  };
  explicit KvStorage(const KvStorageOptions& options) : options_(options) {}

  KvStorageOptions options_;
  uint64_t layer_pool_bytes_ = 0;  // one pool (K or V) of one layer
  std::vector<LayerPools> layers_;
};

}  // namespace bitfleet::cache

// CPU storage of the paged KV cache of one rank: for every layer a K pool and a V pool of
// `num_blocks` blocks, each block `block_size` tokens × n_kv_heads × head_dim elements
// (DESIGN.md §6). Block ids index the pools directly and are the ids BlockPool hands out, so
// every rank of a replica uses the same ids for its own KV-head slice.
//
// Element type: IEEE f16, or int8 codes with one float step per 32 elements of a row
// (kernels/ops.h PagedKv; the step arrays sit beside the pools): 1.125 bytes per element
// instead of 2, for more cached tokens in the same memory at a measured cost in accuracy
// (docs/engine.md, "KV cache element types").
//
// Thread-safety: the buffers are written by the forward pass of the worker that owns the
// storage; concurrent Steps on one storage are not allowed.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "kernels/ops.h"

namespace bitfleet::cache {

enum class KvType { kF16, kInt8 };

// "f16" / "int8", and back (INVALID_ARGUMENT for any other name).
const char* KvTypeName(KvType type);
StatusOr<KvType> ParseKvType(const std::string& name);
// Bytes an element of a cache of `type` takes, its share of the int8 steps included: 2 for f16,
// 1.125 for int8 rows of a multiple of 32 elements.
double KvBytesPerElement(KvType type, int head_dim);

struct KvStorageOptions {
  int num_layers = 0;
  int n_kv_heads = 0;  // KV heads held by this rank
  int head_dim = 0;
  int num_blocks = 0;
  int block_size = 16;
  KvType type = KvType::kF16;
};

// Elements of one layer's K pool (the V pool is the same size), after checking the options:
// INVALID_ARGUMENT for non-positive sizes, RESOURCE_EXHAUSTED when the size overflows (counted at
// two bytes per element, whatever the type). Shared by the host and device storages.
StatusOr<uint64_t> KvLayerPoolElements(const KvStorageOptions& options);

class KvStorage {
 public:
  // Allocates zeroed pools (pages are committed lazily by the OS as blocks are first written).
  // INVALID_ARGUMENT for non-positive sizes, RESOURCE_EXHAUSTED when the allocation fails or
  // the size overflows.
  static StatusOr<std::unique_ptr<KvStorage>> Create(const KvStorageOptions& options);
  // What Create would allocate (bytes() of the result), with Create's errors but allocating nothing.
  static StatusOr<uint64_t> BytesFor(const KvStorageOptions& options);

  const KvStorageOptions& options() const { return options_; }
  int num_blocks() const { return options_.num_blocks; }
  int block_size() const { return options_.block_size; }
  // Bytes of all pools (K and V, every layer; int8 steps included).
  uint64_t bytes() const { return static_cast<uint64_t>(layers_.size()) * 2 * layer_pool_bytes_; }

  // The kernel view of `layer`'s pools; layer must be in [0, num_layers).
  kernels::PagedKv Layer(int layer) const;

 private:
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  using Buffer = std::unique_ptr<void, FreeDeleter>;
  struct LayerPools {
    Buffer k;  // uint16_t (f16) or int8_t elements
    Buffer v;
    Buffer k_steps;  // int8: float steps, one per KvInt8Group elements
    Buffer v_steps;
  };
  explicit KvStorage(const KvStorageOptions& options) : options_(options) {}

  KvStorageOptions options_;
  uint64_t layer_pool_bytes_ = 0;  // one pool (K or V, with its steps) of one layer
  std::vector<LayerPools> layers_;
};

}  // namespace bitfleet::cache

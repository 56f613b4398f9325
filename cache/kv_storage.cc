#include "cache/kv_storage.h"

#include "core/checked_math.h"

namespace bitfleet::cache {

const char* KvTypeName(KvType type) { return type == KvType::kInt8 ? "int8" : "f16"; }

double KvBytesPerElement(KvType type, int head_dim) {
  if (type == KvType::kF16) return sizeof(uint16_t);
  return 1.0 + static_cast<double>(sizeof(float)) / kernels::KvInt8Group(head_dim);
}

StatusOr<KvType> ParseKvType(const std::string& name) {
  if (name == "f16") return KvType::kF16;
  if (name == "int8") return KvType::kInt8;
  return absl::InvalidArgumentError(absl::StrCat("KV cache type '", name, "' is not f16 or int8"));
}

StatusOr<uint64_t> KvLayerPoolElements(const KvStorageOptions& options) {
  if (options.num_layers <= 0 || options.n_kv_heads <= 0 || options.head_dim <= 0 || options.num_blocks <= 0 ||
      options.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV storage needs positive sizes: layers=", options.num_layers, " kv_heads=", options.n_kv_heads,
        " head_dim=", options.head_dim, " blocks=", options.num_blocks, " block_size=", options.block_size));
  }
  std::optional<uint64_t> elems = CheckedMul(static_cast<uint64_t>(options.num_blocks), options.block_size);
  if (elems) elems = CheckedMul(*elems, static_cast<uint64_t>(options.n_kv_heads) * options.head_dim);
  // Every layer's two pools must also be addressable in bytes (at f16's two bytes per element,
  // more than an int8 pool and its steps take).
  std::optional<uint64_t> all = elems ? CheckedMul(*elems, 2 * sizeof(uint16_t)) : std::nullopt;
  if (all) all = CheckedMul(*all, static_cast<uint64_t>(options.num_layers));
  if (!all) return absl::ResourceExhaustedError("KV storage size overflows");
  return *elems;
}

namespace {

// Bytes of one pool (K or V) of one layer holding `elems` elements, int8 steps included.
uint64_t LayerPoolBytes(const KvStorageOptions& options, uint64_t elems) {
  if (options.type != KvType::kInt8) return elems * sizeof(uint16_t);
  return elems + elems / kernels::KvInt8Group(options.head_dim) * sizeof(float);
}

}  // namespace

StatusOr<uint64_t> KvStorage::BytesFor(const KvStorageOptions& options) {
  BF_ASSIGN_OR_RETURN(const uint64_t elems, KvLayerPoolElements(options));
  // KvLayerPoolElements checked that 4 bytes per element (f16's K and V) of every layer fit.
  return LayerPoolBytes(options, elems) * 2 * static_cast<uint64_t>(options.num_layers);
}

StatusOr<std::unique_ptr<KvStorage>> KvStorage::Create(const KvStorageOptions& options) {
  BF_ASSIGN_OR_RETURN(const uint64_t elems, KvLayerPoolElements(options));
  auto storage = std::unique_ptr<KvStorage>(new KvStorage(options));
  const bool int8 = options.type == KvType::kInt8;
  const uint64_t steps = int8 ? elems / kernels::KvInt8Group(options.head_dim) : 0;
  storage->layer_pool_bytes_ = LayerPoolBytes(options, elems);
  storage->layers_.resize(options.num_layers);
  for (LayerPools& pools : storage->layers_) {
    // calloc: large zeroed allocations come straight from the OS, committed on first touch.
    bool allocated = true;
    for (Buffer* pool : {&pools.k, &pools.v}) {
      pool->reset(std::calloc(int8 ? elems : elems * sizeof(uint16_t), 1));
      allocated = allocated && *pool != nullptr;
    }
    if (int8) {
      for (Buffer* pool : {&pools.k_steps, &pools.v_steps}) {
        pool->reset(std::calloc(steps, sizeof(float)));
        allocated = allocated && *pool != nullptr;
      }
    }
    if (!allocated) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate KV storage: ", storage->bytes() >> 20, " MiB"));
    }
  }
  return storage;
}

kernels::PagedKv KvStorage::Layer(int layer) const {
  kernels::PagedKv kv;
  const LayerPools& pools = layers_[layer];
  if (options_.type == KvType::kInt8) {
    kv.k8 = static_cast<int8_t*>(pools.k.get());
    kv.v8 = static_cast<int8_t*>(pools.v.get());
    kv.k_steps = static_cast<float*>(pools.k_steps.get());
    kv.v_steps = static_cast<float*>(pools.v_steps.get());
  } else {
    kv.k = static_cast<uint16_t*>(pools.k.get());
    kv.v = static_cast<uint16_t*>(pools.v.get());
  }
  kv.block_size = options_.block_size;
  kv.n_kv_heads = options_.n_kv_heads;
  kv.head_dim = options_.head_dim;
  kv.num_blocks = options_.num_blocks;
  return kv;
}

}  // namespace bitfleet::cache

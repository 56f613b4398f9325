#include "cache/kv_storage.h"

#include "core/checked_math.h"

namespace bitfleet::cache {

StatusOr<uint64_t> KvLayerPoolElements(const KvStorageOptions& options) {
  if (options.type == KvType::kInt8) {
    return absl::UnimplementedError("int8 KV cache is not supported by the attention kernels yet; use f16");
  }
  if (options.num_layers <= 0 || options.n_kv_heads <= 0 || options.head_dim <= 0 || options.num_blocks <= 0 ||
      options.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV storage needs positive sizes: layers=", options.num_layers, " kv_heads=", options.n_kv_heads,
        " head_dim=", options.head_dim, " blocks=", options.num_blocks, " block_size=", options.block_size));
  }
  std::optional<uint64_t> elems = CheckedMul(static_cast<uint64_t>(options.num_blocks), options.block_size);
  if (elems) elems = CheckedMul(*elems, static_cast<uint64_t>(options.n_kv_heads) * options.head_dim);
  // Every layer's two pools must also be addressable in bytes.
  std::optional<uint64_t> all = elems ? CheckedMul(*elems, 2 * sizeof(uint16_t)) : std::nullopt;
  if (all) all = CheckedMul(*all, static_cast<uint64_t>(options.num_layers));
  if (!all) return absl::ResourceExhaustedError("KV storage size overflows");
  return *elems;
}

StatusOr<std::unique_ptr<KvStorage>> KvStorage::Create(const KvStorageOptions& options) {
  BF_ASSIGN_OR_RETURN(const uint64_t elems, KvLayerPoolElements(options));
  auto storage = std::unique_ptr<KvStorage>(new KvStorage(options));
  storage->layer_pool_bytes_ = elems * sizeof(uint16_t);
  storage->layers_.resize(options.num_layers);
  for (LayerPools& pools : storage->layers_) {
    // calloc: large zeroed allocations come straight from the OS, committed on first touch.
    pools.k.reset(static_cast<uint16_t*>(std::calloc(elems, sizeof(uint16_t))));
    pools.v.reset(static_cast<uint16_t*>(std::calloc(elems, sizeof(uint16_t))));
    if (!pools.k || !pools.v) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate KV storage: ", storage->bytes() >> 20, " MiB"));
    }
  }
  return storage;
}

kernels::PagedKv KvStorage::Layer(int layer) const {
  kernels::PagedKv kv;
  kv.k = layers_[layer].k.get();
  kv.v = layers_[layer].v.get();
  kv.block_size = options_.block_size;
  kv.n_kv_heads = options_.n_kv_heads;
  kv.head_dim = options_.head_dim;
  kv.num_blocks = options_.num_blocks;
  return kv;
}

}  // namespace bitfleet::cache

#include "cache/kv_storage_cuda.h"

#include "core/checked_math.h"
#include "kernels/cuda/cuda_status.h"

namespace bitfleet::cache {

StatusOr<uint64_t> KvStorageCuda::BytesFor(const KvStorageOptions& options) {
  if (options.type != KvType::kF16) {
    return absl::UnimplementedError("the GPU KV cache is f16 only (int8 is a CPU option)");
  }
  // KvLayerPoolElements checked that this product does not overflow.
  BF_ASSIGN_OR_RETURN(const uint64_t elems, KvLayerPoolElements(options));
  return elems * 2 * sizeof(uint16_t) * static_cast<uint64_t>(options.num_layers);
}

StatusOr<std::unique_ptr<KvStorageCuda>> KvStorageCuda::Create(const KvStorageOptions& options) {
  BF_ASSIGN_OR_RETURN(const uint64_t bytes, BytesFor(options));
  std::string reason;
  if (kernels::cuda::UsableCudaDevices(&reason) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("GPU KV storage: ", reason));
  }
  auto storage = std::unique_ptr<KvStorageCuda>(new KvStorageCuda(options));
  BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(cudaGetDevice(&storage->device_), "cudaGetDevice"));
  storage->pool_elems_ = bytes / sizeof(uint16_t) / 2 / static_cast<uint64_t>(options.num_layers);
  StatusOr<kernels::cuda::DeviceBuffer> pools = kernels::cuda::DeviceBuffer::Allocate(bytes);
  if (!pools.ok()) {
    return absl::Status(pools.status().code(), absl::StrCat("GPU KV storage of ", bytes >> 20, " MiB: ",
                                                            std::string(pools.status().message())));
  }
  storage->pools_ = std::move(*pools);
  return storage;
}

kernels::PagedKv KvStorageCuda::Layer(int layer) const {
  kernels::PagedKv kv;
  uint16_t* base = pools_.as<uint16_t>() + static_cast<uint64_t>(layer) * 2 * pool_elems_;
  kv.k = base;
  kv.v = base + pool_elems_;
  kv.block_size = options_.block_size;
  kv.n_kv_heads = options_.n_kv_heads;
  kv.head_dim = options_.head_dim;
  kv.num_blocks = options_.num_blocks;
  return kv;
}

Status KvStorageCuda::CopyBlock(int src, int dst, cudaStream_t stream) {
  if (src < 0 || src >= options_.num_blocks || dst < 0 || dst >= options_.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("block ids ", src, " -> ", dst, " out of range [0, ",
                                                   options_.num_blocks, ")"));
  }
  if (src == dst) return absl::OkStatus();
  const uint64_t block_elems = pool_elems_ / static_cast<uint64_t>(options_.num_blocks);
  const uint64_t block_bytes = block_elems * sizeof(uint16_t);
  // Every (layer, K/V) pool holds the block at the same offset: one strided 2D copy.
  uint16_t* base = pools_.as<uint16_t>();
  const size_t pitch = pool_elems_ * sizeof(uint16_t);
  const size_t n_pools = static_cast<size_t>(options_.num_layers) * 2;
  return kernels::cuda::CudaStatus(
      cudaMemcpy2DAsync(base + dst * block_elems, pitch, base + src * block_elems, pitch, block_bytes, n_pools,
                        cudaMemcpyDeviceToDevice, stream),
      "KV block copy");
}

}  // namespace bitfleet::cache

// GPU storage of the paged KV cache of one rank: the device counterpart of cache/kv_storage.h,
// with the same options, the same pool layout and the same block ids (the ids BlockPool hands
// out index the pools directly), so the coordinator's block tables mean the same on CPU and GPU
// workers. The pools are device memory; Layer() returns the kernels' PagedKv view of them
// (device pointers) for kernels/cuda/attention_launch.h.
//
// Thread-safety: as KvStorage (written by the owning worker's forward pass only).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "cache/kv_storage.h"
#include "core/status.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/ops.h"

namespace bitfleet::cache {

class KvStorageCuda {
 public:
  // Allocates zeroed pools on the current CUDA device, all layers in one allocation.
  // INVALID_ARGUMENT for non-positive sizes, RESOURCE_EXHAUSTED when the device memory does not
  // suffice or the size overflows, UNIMPLEMENTED for kInt8, FAILED_PRECONDITION without a device.
  static StatusOr<std::unique_ptr<KvStorageCuda>> Create(const KvStorageOptions& options);

  // Bytes Create would allocate for `options` (K and V, every layer); error as Create's.
  static StatusOr<uint64_t> BytesFor(const KvStorageOptions& options);

  const KvStorageOptions& options() const { return options_; }
  int num_blocks() const { return options_.num_blocks; }
  int block_size() const { return options_.block_size; }
  int device() const { return device_; }
  uint64_t bytes() const { return pools_.bytes(); }

  // The kernel view of `layer`'s pools (device pointers); layer must be in [0, num_layers).
  kernels::PagedKv Layer(int layer) const;

  // Copies block `src` to block `dst` in every layer (K and V), queued on `stream`: the
  // copy-on-write of a shared prefix block. INVALID_ARGUMENT for ids out of range.
  Status CopyBlock(int src, int dst, cudaStream_t stream);

 private:
  explicit KvStorageCuda(const KvStorageOptions& options) : options_(options) {}

  KvStorageOptions options_;
  int device_ = 0;
  uint64_t pool_elems_ = 0;  // elements of one pool (K or V) of one layer
  kernels::cuda::DeviceBuffer pools_;  // [layer][K, V][block][slot][kv head][dim]
};

}  // namespace bitfleet::cache

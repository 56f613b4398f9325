// Paged KV-cache write: one block per token (WriteKvRow), f32 -> f16 (round to nearest even).
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/kv_row.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
    WriteKvKernel(PagedKv kv, PagedKvBatch batch, const float* __restrict__ k, const float* __restrict__ v) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  WriteKvRow(kv, batch, blockIdx.x, k, v);
}

}  // namespace

cudaError_t LaunchWriteKv(const PagedKv& kv, const PagedKvBatch& batch, int n_tokens, const float* k,
                          const float* v, cudaStream_t stream) {
  if (n_tokens < 0 || kv.block_size <= 0 || kv.n_kv_heads <= 0 || kv.head_dim <= 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(WriteKvKernel, dim3(n_tokens), dim3(kThreads), stream, kv, batch, k, v);
}

}  // namespace bitfleet::kernels::cuda

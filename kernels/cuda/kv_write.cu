// Paged KV-cache write: one block per token, f32 -> f16 (round to nearest even).
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
    WriteKvKernel(PagedKv kv, PagedKvBatch batch, const float* __restrict__ k, const float* __restrict__ v) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  const int t = blockIdx.x;
  const int pos = batch.token_pos[t];
  const int32_t* table = batch.block_tables + int64_t{batch.token_seq[t]} * batch.max_blocks_per_seq;
  const int64_t slot = int64_t{table[pos / kv.block_size]} * kv.block_size + pos % kv.block_size;
  const int row = kv.n_kv_heads * kv.head_dim;
  const int64_t dst = slot * row;
  const int64_t src = int64_t{t} * row;
  for (int i = threadIdx.x; i < row; i += kThreads) {
    kv.k[dst + i] = __half_as_ushort(__float2half_rn(k[src + i]));
    kv.v[dst + i] = __half_as_ushort(__float2half_rn(v[src + i]));
  }
}

}  // namespace

cudaError_t LaunchWriteKv(const PagedKv& kv, const PagedKvBatch& batch, int n_tokens, const float* k,
                          const float* v, cudaStream_t stream) {
  if (n_tokens < 0 || kv.block_size <= 0 || kv.n_kv_heads <= 0 || kv.head_dim <= 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(WriteKvKernel, dim3(n_tokens), dim3(kThreads), stream, kv, batch, k, v);
}

}  // namespace bitfleet::kernels::cuda

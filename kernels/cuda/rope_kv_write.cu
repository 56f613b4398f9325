// RoPE of a step's q and k rows and the write of its K (roped) and V rows into the paged cache,
// in one launch: one block per token rotates its q and k pairs (RotatePair), waits for its
// threads, and writes its K/V rows (WriteKvRow). The three launches it replaces compute the same
// bits with the same functions.
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/kv_row.cuh"
#include "kernels/cuda/rope_pair.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
    RopeWriteKvKernel(float* q, float* k, const float* v, int n_heads, PagedKv kv, PagedKvBatch batch, int rot_dim,
                      double freq_base, bool neox) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  const int t = blockIdx.x;
  const int pos = batch.token_pos[t];
  const int half = rot_dim / 2;
  const int head_dim = kv.head_dim;
  // Pairs of the token's query heads, then of its KV heads.
  for (int idx = threadIdx.x; idx < (n_heads + kv.n_kv_heads) * half; idx += kThreads) {
    const int h = idx / half;
    float* row = h < n_heads ? q + (int64_t{t} * n_heads + h) * head_dim
                             : k + (int64_t{t} * kv.n_kv_heads + (h - n_heads)) * head_dim;
    RotatePair(row, pos, idx % half, rot_dim, freq_base, neox);
  }
  __syncthreads();  // the roped K row, written by the block's threads, is what goes to the cache
  WriteKvRow(kv, batch, t, k, v);
}

}  // namespace

cudaError_t LaunchRopeWriteKv(float* q, float* k, const float* v, int n_tokens, int n_heads, const PagedKv& kv,
                              const PagedKvBatch& batch, int rot_dim, float freq_base, bool neox,
                              cudaStream_t stream) {
  if (n_tokens < 0 || n_heads <= 0 || kv.block_size <= 0 || kv.n_kv_heads <= 0 || kv.head_dim <= 0 ||
      rot_dim <= 0 || rot_dim % 2 != 0 || rot_dim > kv.head_dim) {
    return cudaErrorInvalidValue;
  }
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(RopeWriteKvKernel, dim3(n_tokens), dim3(kThreads), stream, q, k, v, n_heads, kv, batch,
                         rot_dim, static_cast<double>(freq_base), neox);
}

}  // namespace bitfleet::kernels::cuda

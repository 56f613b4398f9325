// Rotary position embedding in place: one thread per (token, head, rotated pair) (RotatePair).
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_launch.h"
#include "kernels/cuda/rope_pair.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    RopeKernel(float* x, const int32_t* __restrict__ positions, int n_tokens, int n_heads, int head_dim, int rot_dim,
               double freq_base, bool neox) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  const int half = rot_dim / 2;
  const int64_t idx = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (idx >= int64_t{n_tokens} * n_heads * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t head = idx / half;  // token * n_heads + h
  const int t = static_cast<int>(head / n_heads);
  RotatePair(x + head * head_dim, positions[t], i, rot_dim, freq_base, neox);
}

}  // namespace

cudaError_t LaunchRope(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim, int rot_dim,
                       float freq_base, bool neox, cudaStream_t stream) {
  if (n_tokens < 0 || n_heads <= 0 || rot_dim <= 0 || rot_dim % 2 != 0 || rot_dim > head_dim) {
    return cudaErrorInvalidValue;
  }
  const int64_t n = int64_t{n_tokens} * n_heads * (rot_dim / 2);
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  return LaunchDependent(RopeKernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), stream, x, positions, n_tokens,
                         n_heads, head_dim, rot_dim, static_cast<double>(freq_base), neox);
}

}  // namespace bitfleet::kernels::cuda

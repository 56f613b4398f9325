// Per-token int8 activation quantization (kernels/matmul.h semantics, bit for bit): one block
// per token, 256 threads.
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// The reference's QuantizeActivationValue: the float product, NaN -> 0, clamp, round half even.
__device__ __forceinline__ int QuantizeValue(float x, float inv) {
  const float v = x * inv;
  if (isnan(v)) return 0;
  return static_cast<int>(rintf(fminf(127.0f, fmaxf(-127.0f, v))));
}

__global__ void __launch_bounds__(kThreads)
    QuantizeActivationsKernel(const float* __restrict__ x, int64_t cols, const float* __restrict__ absmax_in,
                              int64_t stride, int8_t* __restrict__ q, float* __restrict__ absmax_out,
                              int32_t* __restrict__ sums) {
  // The mat-vec that consumes q starts early and prefetches its weight meanwhile.
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const float* xt = x + t * cols;

  float absmax;
  if (absmax_in != nullptr) {
    absmax = absmax_in[t];
  } else {
    float m = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) m = fmaxf(m, fabsf(xt[c]));
    absmax = BlockMax(m, scratch);
  }
  if (threadIdx.x == 0) absmax_out[t] = absmax;
  const float inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;

  // Each warp quantizes runs of 32 consecutive elements, so a run's sum is one warp reduction.
  const int lane = threadIdx.x & 31;
  int8_t* qt = q + t * stride;
  int32_t* st = sums + t * (stride / 32);
  for (int64_t base = (threadIdx.x & ~31); base < stride; base += kThreads) {
    const int64_t c = base + lane;
    const int v = c < cols ? QuantizeValue(xt[c], inv) : 0;
    qt[c] = static_cast<int8_t>(v);
    const int s = __reduce_add_sync(kFullMask, v);
    if (lane == 0) st[base / 32] = s;
  }
}

}  // namespace

cudaError_t LaunchQuantizeActivations(const float* x, int n_tokens, int64_t cols, const float* absmax_in,
                                      int64_t stride, int8_t* q, float* absmax_out, int32_t* sums,
                                      cudaStream_t stream) {
  if (n_tokens < 0 || cols <= 0 || stride < cols || stride % 256 != 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(QuantizeActivationsKernel, dim3(n_tokens), dim3(kThreads), stream, x, cols, absmax_in, stride,
                         q, absmax_out, sums);
}

}  // namespace bitfleet::kernels::cuda

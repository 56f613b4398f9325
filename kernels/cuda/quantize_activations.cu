// int8 activation quantization (kernels/matmul.h semantics, bit for bit), per token or per
// 32-column block: one block per token, 256 threads. Each warp quantizes runs of 32 consecutive
// elements, which are exactly the 32-column blocks, so a block's sum (and, per block, its absmax)
// is one warp reduction.
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

// max |v| over the warp's 32 values with NaN ignored (as ref::ComputeAbsMaxRef's std::max):
// the bit patterns of non-negative floats (+inf included) order as the floats do, so one integer
// max reduction returns one of the values exactly.
__device__ __forceinline__ float WarpAbsMax(float v) {
  const float a = fabsf(v);
  const unsigned bits = isnan(a) ? 0u : __float_as_uint(a);
  return __uint_as_float(__reduce_max_sync(kFullMask, bits));
}

// Token blockIdx.x. Per token (`per_block` false) the row's absmax (given or computed) scales
// every element and is repeated as the step of every block; per block each warp run takes its
// own absmax. The inverse scale and the step are computed in float exactly as the reference's
// ActivationInvScale / ActivationScale.
__global__ void __launch_bounds__(kThreads)
    QuantizeActivationsKernel(const float* __restrict__ x, int64_t cols, bool per_block,
                              const float* __restrict__ absmax_in, int64_t stride, int8_t* __restrict__ q,
                              float* __restrict__ absmax_out, int32_t* __restrict__ sums,
                              float* __restrict__ block_steps) {
  // The mat-vec that consumes q starts early and prefetches its weight meanwhile.
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const float* xt = x + t * cols;

  float absmax = 0.0f;
  if (!per_block) {
    if (absmax_in != nullptr) {
      absmax = absmax_in[t];
    } else {
      float m = 0.0f;
      for (int64_t c = threadIdx.x; c < cols; c += kThreads) m = fmaxf(m, fabsf(xt[c]));
      absmax = BlockMax(m, scratch);
    }
    if (threadIdx.x == 0) absmax_out[t] = absmax;
  }
  const float row_inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;
  const float row_step = absmax / 127.0f;

  const int lane = threadIdx.x & 31;
  int8_t* qt = q + t * stride;
  int32_t* st = sums + t * (stride / 32);
  float* steps = block_steps + t * (stride / 32);
  float row_max = 0.0f;  // per block: the largest absmax of this warp's blocks
  for (int64_t base = (threadIdx.x & ~31); base < stride; base += kThreads) {
    const int64_t c = base + lane;
    const float xc = c < cols ? xt[c] : 0.0f;
    float inv = row_inv;
    float step = row_step;
    if (per_block) {  // uniform over the launch
      const float a = WarpAbsMax(xc);  // the zeros past cols change no max
      inv = a > 0.0f ? 127.0f / a : 0.0f;
      step = a / 127.0f;
      row_max = fmaxf(row_max, a);
    }
    const int v = c < cols ? QuantizeValue(xc, inv) : 0;
    qt[c] = static_cast<int8_t>(v);
    const int s = __reduce_add_sync(kFullMask, v);
    if (lane == 0) {
      st[base / 32] = s;
      steps[base / 32] = base < cols ? step : 0.0f;
    }
  }
  if (per_block) {
    const float m = BlockMax(row_max, scratch);
    if (threadIdx.x == 0) absmax_out[t] = m;
  }
}

cudaError_t Launch(const float* x, int n_tokens, int64_t cols, bool per_block, const float* absmax_in,
                   int64_t stride, int8_t* q, float* absmax_out, int32_t* sums, float* block_steps,
                   cudaStream_t stream) {
  if (n_tokens < 0 || cols <= 0 || stride < cols || stride % 256 != 0 || q == nullptr || absmax_out == nullptr ||
      sums == nullptr || block_steps == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(QuantizeActivationsKernel, dim3(n_tokens), dim3(kThreads), stream, x, cols, per_block,
                         absmax_in, stride, q, absmax_out, sums, block_steps);
}

}  // namespace

cudaError_t LaunchQuantizeActivations(const float* x, int n_tokens, int64_t cols, const float* absmax_in,
                                      int64_t stride, int8_t* q, float* absmax_out, int32_t* sums,
                                      float* block_steps, cudaStream_t stream) {
  return Launch(x, n_tokens, cols, false, absmax_in, stride, q, absmax_out, sums, block_steps, stream);
}

cudaError_t LaunchQuantizeActivationBlocks(const float* x, int n_tokens, int64_t cols, int64_t stride, int8_t* q,
                                           float* absmax_out, int32_t* sums, float* block_steps,
                                           cudaStream_t stream) {
  return Launch(x, n_tokens, cols, true, nullptr, stride, q, absmax_out, sums, block_steps, stream);
}

}  // namespace bitfleet::kernels::cuda

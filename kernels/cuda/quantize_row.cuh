// The int8 activation quantization, per token or per 32-column block, shared by the kernels that
// produce matmul activations (quantize_activations.cu, norm_quantize.cu): kernels/matmul.h's
// semantics bit for bit. Device code only.
#pragma once

#include <cstdint>

#include "kernels/cuda/device_util.cuh"

namespace bitfleet::kernels::cuda {

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

// Quantizes one token's row, element c being value(c) for c < cols (value is never called past
// cols), into qt (zero from cols up to stride), and writes the per-32 block sums to st and the
// dequantization step of each block to steps (zero for blocks past cols). Per token (`per_block`
// false, uniform over the launch) every element takes row_absmax and every block's step is
// row_absmax / 127; per block each 32-column run takes its own absmax (row_absmax unused). The
// inverse scale and the step are computed in float exactly as ref::ActivationInvScale /
// ActivationScale. Called by every thread of a block whose size is a multiple of 32 (kThreads);
// each warp takes runs of 32 consecutive elements, which are exactly the 32-column blocks, so a
// block's sum (and, per block, its absmax) is one warp reduction. Returns, per block, the largest
// absmax of this thread's runs (a BlockMax over the block gives the row's max), 0 per token.
template <int kThreads, typename Value>
__device__ __forceinline__ float QuantizeRow(Value value, int64_t cols, int64_t stride, bool per_block,
                                             float row_absmax, int8_t* qt, int32_t* st, float* steps) {
  const float row_inv = row_absmax > 0.0f ? 127.0f / row_absmax : 0.0f;
  const float row_step = row_absmax / 127.0f;
  const int lane = threadIdx.x & 31;
  float run_max = 0.0f;
  for (int64_t base = (threadIdx.x & ~31); base < stride; base += kThreads) {
    const int64_t c = base + lane;
    const float xc = c < cols ? value(c) : 0.0f;
    float inv = row_inv;
    float step = row_step;
    if (per_block) {
      const float a = WarpAbsMax(xc);  // the zeros past cols change no max
      inv = a > 0.0f ? 127.0f / a : 0.0f;
      step = a / 127.0f;
      run_max = fmaxf(run_max, a);
    }
    const int v = c < cols ? QuantizeValue(xc, inv) : 0;
    qt[c] = static_cast<int8_t>(v);
    const int sum = __reduce_add_sync(kFullMask, v);
    if (lane == 0) {
      st[base / 32] = sum;
      steps[base / 32] = base < cols ? step : 0.0f;
    }
  }
  return run_max;
}

}  // namespace bitfleet::kernels::cuda

// The per-token int8 quantization shared by the kernels that produce matmul activations
// (quantize_activations.cu, norm_quantize.cu): kernels/matmul.h's semantics bit for bit. Device
// code only.
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

// Quantizes one token's row, element c being value(c) for c < cols, into qt (zero from cols up
// to stride) with step 1 / inv, and writes the per-32 block sums to st. Called by every thread
// of a block whose size is a multiple of 32 (kThreads); each warp takes runs of 32 consecutive
// elements, so a run's sum is one warp reduction.
template <int kThreads, typename Value>
__device__ __forceinline__ void QuantizeRow(Value value, int64_t cols, int64_t stride, float inv, int8_t* qt,
                                            int32_t* st) {
  const int lane = threadIdx.x & 31;
  for (int64_t base = (threadIdx.x & ~31); base < stride; base += kThreads) {
    const int64_t c = base + lane;
    const int v = c < cols ? QuantizeValue(value(c), inv) : 0;
    qt[c] = static_cast<int8_t>(v);
    const int sum = __reduce_add_sync(kFullMask, v);
    if (lane == 0) st[base / 32] = sum;
  }
}

}  // namespace bitfleet::kernels::cuda

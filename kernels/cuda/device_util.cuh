// Small device helpers shared by the CUDA kernels: warp reductions, cached/streaming loads and
// fp16/bf16 conversions. Device code only (included by .cu files).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace bitfleet::kernels::cuda {

inline constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ double WarpSum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). Every thread gets the
// result. `scratch` holds 32 values; the call begins and ends with a barrier so it may be
// reused back to back.
template <typename T>
__device__ __forceinline__ T BlockSum(T v, T* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int n_warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = lane < n_warps ? scratch[lane] : T(0);
  return WarpSum(total);
}

// Max over the block; same contract as BlockSum. fmaxf ignores NaN inputs.
__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int n_warps = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = lane < n_warps ? scratch[lane] : -INFINITY;
  return WarpMax(m);
}

// Weight streams are read once per call: keep them out of L1 (evict-first).
__device__ __forceinline__ uint4 LoadStreaming(const uint4* p) { return __ldcs(p); }
__device__ __forceinline__ uint32_t LoadStreaming(const uint32_t* p) { return __ldcs(p); }
// Activations are re-read by many blocks: the read-only cached path.
__device__ __forceinline__ int4 LoadCached(const int4* p) { return __ldg(p); }
__device__ __forceinline__ int LoadCached(const int* p) { return __ldg(p); }

__device__ __forceinline__ float HalfBitsToFloat(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float Bf16BitsToFloat(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

}  // namespace bitfleet::kernels::cuda

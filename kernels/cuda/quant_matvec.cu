// Quantized mat-vec for decode (1..kMatVecMaxTokens tokens): W2A8 / W4A8 / W8A8 with dp4a.
//
// One block per row group (8 rows), 4 warps splitting the steps (K). Per step a warp reads the
// group's 512 contiguous code bytes, 16 per lane (lane l: row l / 4, quarter l % 4), so every
// weight byte is read once with full 16-byte coalesced loads and several steps in flight; the
// activations (a few KiB per token) come from L1. Codes are decoded to signed bytes once and
// reused for every token. Lanes of one row, then warps, are summed at the end.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 4;  // steps per warp with loads in flight together

template <QuantFormat F, int NT>
__global__ void __launch_bounds__(kThreads) QuantMatVecKernel(QuantWeightView w, ActivationView x, float* out) {
  const int64_t g = blockIdx.x;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int r = lane >> 2;
  const int quarter = lane & 3;
  const int n_tokens = x.n_tokens;
  const int64_t sums_stride = x.stride / 32;

  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;

  const uint8_t* lane_codes = w.codes + CodeOffset(g, 0, r, w.n_steps) + 16 * quarter;
  for (int64_t s0 = warp; s0 < w.n_steps; s0 += kWarps * kUnroll) {
    uint4 c[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t s = s0 + int64_t{u} * kWarps;
      if (s < w.n_steps) c[u] = LoadStreaming(reinterpret_cast<const uint4*>(lane_codes + s * kGroupStepBytes));
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t s = s0 + int64_t{u} * kWarps;
      if (s >= w.n_steps) break;
      const int64_t block = s * BlocksPerStep(F) + LaneBlock(F, quarter);
      const uint64_t si = ScaleIndex(g, block, r, w.n_blocks);
      float d;
      float m = 0.0f;
      if constexpr (F == QuantFormat::kTernary) {
        d = __ldg(w.scales + si);
      } else {
        d = HalfBitsToFloat(__ldg(w.half_d + si));
        if constexpr (F == QuantFormat::kQ4_1) m = HalfBitsToFloat(__ldg(w.half_m + si));
      }
      const int64_t e0 = s * StepElems(F);
      const uint32_t words[4] = {c[u].x, c[u].y, c[u].z, c[u].w};
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (NT > 1 && t >= n_tokens) break;
        const int dot = LaneDot<F>(words, quarter, x.q + t * x.stride + e0);
        acc[t] += d * static_cast<float>(dot);
        if constexpr (F == QuantFormat::kQ4_1) {
          acc[t] += m * static_cast<float>(__ldg(x.sums + t * sums_stride + block));
        }
      }
    }
  }

  // Sum the four quarters of each row, then the warps.
  __shared__ float partial[kWarps][kRowGroup][NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    float v = acc[t];
    v += __shfl_xor_sync(kFullMask, v, 1);
    v += __shfl_xor_sync(kFullMask, v, 2);
    if (quarter == 0) partial[warp][r][t] = v;
  }
  __syncthreads();
  if (threadIdx.x < kRowGroup * NT) {
    const int row_in_group = threadIdx.x % kRowGroup;
    const int t = threadIdx.x / kRowGroup;
    const int64_t row = g * kRowGroup + row_in_group;
    if (row < w.rows && t < n_tokens) {
      float v = 0.0f;
#pragma unroll
      for (int k = 0; k < kWarps; ++k) v += partial[k][row_in_group][t];
      out[t * w.rows + row] = v * (x.absmax[t] / 127.0f);
    }
  }
}

template <QuantFormat F>
cudaError_t Launch(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(w.n_groups));
  if (x.n_tokens == 1) {
    QuantMatVecKernel<F, 1><<<grid, kThreads, 0, stream>>>(w, x, out);
  } else {
    QuantMatVecKernel<F, kMatVecMaxTokens><<<grid, kThreads, 0, stream>>>(w, x, out);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchQuantMatVec(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  if (x.n_tokens < 0 || x.n_tokens > kMatVecMaxTokens || x.cols != w.cols || w.n_groups <= 0 ||
      x.stride < w.n_steps * StepElems(w.format)) {
    return cudaErrorInvalidValue;
  }
  if (x.n_tokens == 0) return cudaSuccess;
  switch (w.format) {
    case QuantFormat::kTernary:
      return Launch<QuantFormat::kTernary>(w, x, out, stream);
    case QuantFormat::kQ4_0:
      return Launch<QuantFormat::kQ4_0>(w, x, out, stream);
    case QuantFormat::kQ4_1:
      return Launch<QuantFormat::kQ4_1>(w, x, out, stream);
    case QuantFormat::kQ8_0:
      return Launch<QuantFormat::kQ8_0>(w, x, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace bitfleet::kernels::cuda

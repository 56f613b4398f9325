// Quantized mat-mat for prefill and batched decode: int8 tensor cores (mma.sync m16n8k32,
// sm_80 and later) over the same weight layout as the mat-vec.
//
// Block tile: 16 rows (two row groups) × 32 tokens; the block's 4 warps split the steps (K) and
// their partial sums are added in shared memory at the end. Fragments are loaded straight from
// global memory: thanks to the layout (kernels/cuda/weight_layout.h), the A fragment registers
// of a k-step are whole 32-bit words of a row's step, masked or shifted (thread (gid, tid) of
// the warp reads words 4i + tid, i = 0..3, of rows gid and gid + 8), and the B fragments are
// 32-bit words of the token rows of q. Integer products are scaled per block (ternary: per
// step; Q4/Q8: per k-step) into float accumulators.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileRows = 2 * kRowGroup;  // 16, the mma M
constexpr int kNTiles = 4;                // mma N tiles of 8 tokens
constexpr int kTileTokens = 8 * kNTiles;  // 32

__device__ __forceinline__ void MmaS8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                      uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <QuantFormat F>
__global__ void __launch_bounds__(kThreads) QuantMatMulMmaKernel(QuantWeightView w, ActivationView x, float* out) {
  constexpr int kSteps = MmaKSteps(F);
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int gid = lane >> 2;
  const int tid = lane & 3;
  const int64_t g0 = int64_t{blockIdx.x} * 2;
  const bool has_g1 = g0 + 1 < w.n_groups;
  const int token0 = blockIdx.y * kTileTokens;
  const int64_t sums_stride = x.stride / 32;

  // Token rows of the B fragments (column gid of each n-tile), clamped to a valid token; the
  // results of clamped columns are never written.
  const int8_t* xrow[kNTiles];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    const int tok = min(token0 + 8 * nt + gid, x.n_tokens - 1);
    xrow[nt] = x.q + int64_t{tok} * x.stride + 4 * tid;
  }

  float acc[kNTiles][4];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[nt][i] = 0.0f;
  }

  for (int64_t s = warp; s < w.n_steps; s += kWarps) {
    uint32_t words0[4];
    uint32_t words1[4] = {0, 0, 0, 0};
    const uint32_t* p0 = reinterpret_cast<const uint32_t*>(w.codes + CodeOffset(g0, s, gid, w.n_steps)) + tid;
    const uint32_t* p1 = reinterpret_cast<const uint32_t*>(w.codes + CodeOffset(g0 + 1, s, gid, w.n_steps)) + tid;
#pragma unroll
    for (int i = 0; i < 4; ++i) words0[i] = LoadStreaming(p0 + 4 * i);
    if (has_g1) {
#pragma unroll
      for (int i = 0; i < 4; ++i) words1[i] = LoadStreaming(p1 + 4 * i);
    }
    const int64_t e0 = s * StepElems(F);

    int ci[kNTiles][4];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) ci[nt][i] = 0;
    }
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      uint32_t a0, a1, a2, a3;
      MmaFragmentA<F>(words0, ks, &a0, &a2);
      MmaFragmentA<F>(words1, ks, &a1, &a3);
      const int64_t k0 = e0 + 32 * ks;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        const uint32_t b0 = static_cast<uint32_t>(LoadCached(reinterpret_cast<const int*>(xrow[nt] + k0)));
        const uint32_t b1 = static_cast<uint32_t>(LoadCached(reinterpret_cast<const int*>(xrow[nt] + k0 + 16)));
        MmaS8(ci[nt], a0, a1, a2, a3, b0, b1);
      }
      if constexpr (F != QuantFormat::kTernary) {
        // One 32-block per k-step: scale now and restart the integer sums.
        const int64_t block = s * BlocksPerStep(F) + ks;
        const float d0 = HalfBitsToFloat(__ldg(w.half_d + ScaleIndex(g0, block, gid, w.n_blocks)));
        const float d1 = has_g1 ? HalfBitsToFloat(__ldg(w.half_d + ScaleIndex(g0 + 1, block, gid, w.n_blocks))) : 0.0f;
        float m0 = 0.0f;
        float m1 = 0.0f;
        if constexpr (F == QuantFormat::kQ4_1) {
          m0 = HalfBitsToFloat(__ldg(w.half_m + ScaleIndex(g0, block, gid, w.n_blocks)));
          m1 = has_g1 ? HalfBitsToFloat(__ldg(w.half_m + ScaleIndex(g0 + 1, block, gid, w.n_blocks))) : 0.0f;
        }
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          acc[nt][0] += d0 * static_cast<float>(ci[nt][0]);
          acc[nt][1] += d0 * static_cast<float>(ci[nt][1]);
          acc[nt][2] += d1 * static_cast<float>(ci[nt][2]);
          acc[nt][3] += d1 * static_cast<float>(ci[nt][3]);
          if constexpr (F == QuantFormat::kQ4_1) {
            // Columns 2 * tid and 2 * tid + 1 of the n-tile: their tokens' block sums.
            const int tok_a = min(token0 + 8 * nt + 2 * tid, x.n_tokens - 1);
            const int tok_b = min(token0 + 8 * nt + 2 * tid + 1, x.n_tokens - 1);
            const float sa = static_cast<float>(__ldg(x.sums + tok_a * sums_stride + block));
            const float sb = static_cast<float>(__ldg(x.sums + tok_b * sums_stride + block));
            acc[nt][0] += m0 * sa;
            acc[nt][1] += m0 * sb;
            acc[nt][2] += m1 * sa;
            acc[nt][3] += m1 * sb;
          }
#pragma unroll
          for (int i = 0; i < 4; ++i) ci[nt][i] = 0;
        }
      }
    }
    if constexpr (F == QuantFormat::kTernary) {
      const float d0 = __ldg(w.scales + ScaleIndex(g0, s, gid, w.n_blocks));
      const float d1 = has_g1 ? __ldg(w.scales + ScaleIndex(g0 + 1, s, gid, w.n_blocks)) : 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        acc[nt][0] += d0 * static_cast<float>(ci[nt][0]);
        acc[nt][1] += d0 * static_cast<float>(ci[nt][1]);
        acc[nt][2] += d1 * static_cast<float>(ci[nt][2]);
        acc[nt][3] += d1 * static_cast<float>(ci[nt][3]);
      }
    }
  }

  // Add the warps' partial tiles: [warp][row 0..15][token 0..31].
  __shared__ float partial[kWarps][kTileRows][kTileTokens];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    const int col = 8 * nt + 2 * tid;
    partial[warp][gid][col] = acc[nt][0];
    partial[warp][gid][col + 1] = acc[nt][1];
    partial[warp][gid + 8][col] = acc[nt][2];
    partial[warp][gid + 8][col + 1] = acc[nt][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kTileRows * kTileTokens; i += kThreads) {
    const int row_in_tile = i / kTileTokens;
    const int col = i % kTileTokens;
    const int64_t row = int64_t{blockIdx.x} * kTileRows + row_in_tile;
    const int tok = token0 + col;
    if (row >= w.rows || tok >= x.n_tokens) continue;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) v += partial[k][row_in_tile][col];
    out[int64_t{tok} * w.rows + row] = v * (x.absmax[tok] / 127.0f);
  }
}

}  // namespace

cudaError_t LaunchQuantMatMulMma(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  if (x.n_tokens < 0 || x.cols != w.cols || w.n_groups <= 0 || x.stride < w.n_steps * StepElems(w.format)) {
    return cudaErrorInvalidValue;
  }
  if (x.n_tokens == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((w.n_groups + 1) / 2), static_cast<unsigned>((x.n_tokens + kTileTokens - 1) / kTileTokens));
  if (grid.y > 65535) return cudaErrorInvalidValue;
  switch (w.format) {
    case QuantFormat::kTernary:
      QuantMatMulMmaKernel<QuantFormat::kTernary><<<grid, kThreads, 0, stream>>>(w, x, out);
      break;
    case QuantFormat::kQ4_0:
      QuantMatMulMmaKernel<QuantFormat::kQ4_0><<<grid, kThreads, 0, stream>>>(w, x, out);
      break;
    case QuantFormat::kQ4_1:
      QuantMatMulMmaKernel<QuantFormat::kQ4_1><<<grid, kThreads, 0, stream>>>(w, x, out);
      break;
    case QuantFormat::kQ8_0:
      QuantMatMulMmaKernel<QuantFormat::kQ8_0><<<grid, kThreads, 0, stream>>>(w, x, out);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace bitfleet::kernels::cuda

// Float-weight (F32 / F16 / BF16) matmuls with float activations.
//
// - Mat-vec (up to kFloatMatVecMaxTokens tokens, and F32 weights at any batch): one warp per
//   row, 16-byte weight loads (8 elements per lane and step), float accumulation, tokens in
//   tiles of 4 so a weight chunk is loaded once per tile.
// - Larger batches of F16 / BF16 weights (LM heads in batched decode and prefill): TF32 tensor
//   cores (mma.sync m16n8k8). F16 and BF16 values are exact in TF32; each activation is split
//   as x = hi + lo (hi: x truncated to TF32, lo: x - hi rounded to TF32), so each product is
//   within 2^-21 |w x| at two MMAs per k-step. The tensor cores accumulate 64 columns at a
//   time, then a float add collects the chunks, so their accumulation rounding stays far
//   inside the 1e-5 budget. Weights stream with 16-byte loads, two steps ahead (see the
//   comment above kMmaNTiles).
#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTokenTile = 4;

// Eight consecutive weights starting at element `c` of a row (c a multiple of 8).
template <FloatFormat F>
__device__ __forceinline__ void LoadWeights8(const void* row, int64_t c, float (&w)[8]) {
  if constexpr (F == FloatFormat::kF32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(row) + c);
    const float4 a = __ldcs(p);
    const float4 b = __ldcs(p + 1);
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
  } else {
    const uint4 v = __ldcs(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(row) + c));
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t lo = static_cast<uint16_t>(words[i] & 0xffffu);
      const uint16_t hi = static_cast<uint16_t>(words[i] >> 16);
      if constexpr (F == FloatFormat::kF16) {
        w[2 * i] = HalfBitsToFloat(lo);
        w[2 * i + 1] = HalfBitsToFloat(hi);
      } else {
        w[2 * i] = Bf16BitsToFloat(lo);
        w[2 * i + 1] = Bf16BitsToFloat(hi);
      }
    }
  }
}

template <FloatFormat F>
__global__ void __launch_bounds__(kThreads)
    FloatMatMulKernel(FloatWeightView w, const float* __restrict__ x, int n_tokens, float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t{blockIdx.x} * kWarps + (threadIdx.x >> 5);
  if (row >= w.rows) return;
  const size_t elem_bytes = F == FloatFormat::kF32 ? 4 : 2;
  const void* wrow = static_cast<const uint8_t*>(w.data) + row * w.row_stride * elem_bytes;
  const int64_t n_chunks = (w.cols + 7) / 8;
  const bool vec_x = (w.cols % 4) == 0;  // token rows of x are 16-byte aligned

  for (int t0 = 0; t0 < n_tokens; t0 += kTokenTile) {
    float acc[kTokenTile] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t ch = lane; ch < n_chunks; ch += 32) {
      const int64_t c = ch * 8;
      float wv[8];
      LoadWeights8<F>(wrow, c, wv);
      const bool full = c + 8 <= w.cols;
#pragma unroll
      for (int t = 0; t < kTokenTile; ++t) {
        if (t0 + t >= n_tokens) break;
        const float* xt = x + int64_t{t0 + t} * w.cols + c;
        float xv[8];
        if (full && vec_x) {
          const float4 a = __ldg(reinterpret_cast<const float4*>(xt));
          const float4 b = __ldg(reinterpret_cast<const float4*>(xt) + 1);
          xv[0] = a.x, xv[1] = a.y, xv[2] = a.z, xv[3] = a.w, xv[4] = b.x, xv[5] = b.y, xv[6] = b.z, xv[7] = b.w;
        } else {
#pragma unroll
          for (int i = 0; i < 8; ++i) xv[i] = c + i < w.cols ? __ldg(xt + i) : 0.0f;
        }
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) s = fmaf(wv[i], xv[i], s);
        acc[t] += s;
      }
    }
#pragma unroll
    for (int t = 0; t < kTokenTile; ++t) {
      if (t0 + t >= n_tokens) break;
      const float v = WarpSum(acc[t]);
      if (lane == 0) out[int64_t{t0 + t} * w.rows + row] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core path. A warp computes 32 rows (two m16 tiles) × up to 32 tokens (four n8 tiles)
// and walks the columns in steps of 32 (four m16n8k8 k-steps). Weights stream with one 16-byte
// load per (row, step) and lane: lane (gid = lane / 4, tid = lane % 4) loads columns
// [32 s + 8 tid, +8) of rows gid and gid + 8, and k-step j of the step uses its word j. The
// k-steps therefore see the columns in a permuted order (k-step j, logical k = tid <-> column
// 8 tid + 2 j; k = tid + 4 <-> column 8 tid + 2 j + 1), which leaves the dot product unchanged
// because the B fragments (activations) use the same permutation: lane (gid, tid) loads columns
// [8 tid, +8) of token gid as two float4.
// Split-K: with few rows, the 4 warps of a block share rows and take every `split`-th step,
// and the partial sums meet in shared memory (one more float add each).
// Latency: each iteration issues the next pair of steps' weight loads (8 × 16 bytes per lane)
// before the MMAs of the current pair.

constexpr int kMmaNTiles = 4;                 // 32 tokens per block
constexpr int kMmaTileTokens = 8 * kMmaNTiles;
constexpr int kMmaMTiles = 2;                 // 32 rows per warp
constexpr int kMmaWarpRows = 16 * kMmaMTiles;
constexpr int kMmaStepCols = 32;              // columns per step: 4 k-steps of 8
constexpr int kMmaAccs = kMmaMTiles * kMmaNTiles * 4;
// Split-K is used while a grid of whole-row blocks would have fewer blocks than this (about
// two per SM on H100/H200): small matrices need every SM streaming.
constexpr int64_t kMmaMinBlocks = 256;

// TF32 pieces of an activation: hi = x with its low 13 mantissa bits cleared, so x - hi is
// exact, and lo = x - hi rounded to nearest TF32 (ties away; |lo| < 2^-10 |x|, so its rounding
// error is < 2^-21 |x|). Integer ops instead of cvt.rna: they issue at full rate.
__device__ __forceinline__ void SplitTf32(float x, uint32_t& hi, uint32_t& lo) {
  hi = __float_as_uint(x) & 0xffffe000u;
  lo = (__float_as_uint(x - __uint_as_float(hi)) + 0x1000u) & 0xffffe000u;
}

__device__ __forceinline__ void MmaTf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t Word(const uint4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

// The two weights of a 32-bit word (column c in the low half, c + 1 in the high half) as TF32
// bits: exact conversions for F16 and BF16.
template <FloatFormat F>
__device__ __forceinline__ void WeightPairTf32(uint32_t word, uint32_t& even, uint32_t& odd) {
  if constexpr (F == FloatFormat::kF16) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&word));
    even = __float_as_uint(f.x);
    odd = __float_as_uint(f.y);
  } else {
    even = word << 16;
    odd = word & 0xffff0000u;
  }
}

// The lane's 16-byte weight chunks of one step: [m tile][row gid / gid + 8]. Zero past the
// last column (col is the chunk's first column, a multiple of 8; col < cols <= row_stride
// keeps the whole chunk inside the row).
__device__ __forceinline__ void LoadStepWeights(const uint16_t* const (&wr)[kMmaMTiles][2], int64_t col,
                                                int64_t cols, uint4 (&v)[kMmaMTiles][2]) {
  const bool in = col < cols;
#pragma unroll
  for (int m = 0; m < kMmaMTiles; ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      v[m][h] = in ? LoadStreaming(reinterpret_cast<const uint4*>(wr[m][h] + col)) : make_uint4(0, 0, 0, 0);
    }
  }
}

// Eight activations of one token from column `col` (a multiple of 8), zero past `cols`.
// `vec`: rows of x are 16-byte aligned.
__device__ __forceinline__ void LoadX8(const float* __restrict__ xrow, int64_t col, int64_t cols, bool vec,
                                       float (&v)[8]) {
  if (vec && col + 8 <= cols) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(xrow + col));
    const float4 b = __ldg(reinterpret_cast<const float4*>(xrow + col) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = col + i < cols ? __ldg(xrow + col + i) : 0.0f;
  }
}

// c += the step's products for the first NT n tiles. Called by the whole warp (uniform).
template <FloatFormat F, int NT>
__device__ __forceinline__ void MmaStep(const uint4 (&wv)[kMmaMTiles][2], const float* const (&xr)[kMmaNTiles],
                                        int64_t col, int64_t cols, bool vec_x,
                                        float (&c)[kMmaMTiles][kMmaNTiles][4]) {
  uint32_t a[kMmaMTiles][4][4];  // [m tile][k-step][fragment register]
#pragma unroll
  for (int m = 0; m < kMmaMTiles; ++m) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      WeightPairTf32<F>(Word(wv[m][0], j), a[m][j][0], a[m][j][2]);  // row gid: k = tid, tid + 4
      WeightPairTf32<F>(Word(wv[m][1], j), a[m][j][1], a[m][j][3]);  // row gid + 8
    }
  }
  float xv[NT][8];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) LoadX8(xr[nt], col, cols, vec_x, xv[nt]);
  __syncwarp();  // the loads may branch per lane; mma.sync needs the warp converged
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    uint32_t hi[8], lo[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) SplitTf32(xv[nt][i], hi[i], lo[i]);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int m = 0; m < kMmaMTiles; ++m) {
        MmaTf32(c[m][nt], a[m][j], hi[2 * j], hi[2 * j + 1]);
        MmaTf32(c[m][nt], a[m][j], lo[2 * j], lo[2 * j + 1]);
      }
    }
  }
}

// The warp's steps first, first + split, ... below n_steps, two per iteration: the tensor
// cores accumulate the two steps (64 columns, 16 MMAs per output) and a float add collects
// them into acc, which keeps the tensor cores' accumulation rounding far inside the budget.
template <FloatFormat F, int NT>
__device__ __forceinline__ void MmaRowTile(const uint16_t* const (&wr)[kMmaMTiles][2],
                                           const float* const (&xr)[kMmaNTiles], int64_t first, int split,
                                           int64_t n_steps, int tid, int64_t cols, bool vec_x,
                                           float (&acc)[kMmaMTiles][kMmaNTiles][4]) {
  uint4 cur[2][kMmaMTiles][2];
  LoadStepWeights(wr, first * kMmaStepCols + 8 * tid, cols, cur[0]);
  LoadStepWeights(wr, (first + split) * kMmaStepCols + 8 * tid, cols, cur[1]);
  for (int64_t s = first; s < n_steps; s += 2 * split) {
    uint4 next[2][kMmaMTiles][2];
    LoadStepWeights(wr, (s + 2 * split) * kMmaStepCols + 8 * tid, cols, next[0]);
    LoadStepWeights(wr, (s + 3 * split) * kMmaStepCols + 8 * tid, cols, next[1]);
    float c[kMmaMTiles][kMmaNTiles][4] = {};
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const int64_t step = s + p * split;
      if (step < n_steps) MmaStep<F, NT>(cur[p], xr, step * kMmaStepCols + 8 * tid, cols, vec_x, c);
    }
#pragma unroll
    for (int m = 0; m < kMmaMTiles; ++m) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[m][nt][i] += c[m][nt][i];
      }
    }
#pragma unroll
    for (int p = 0; p < 2; ++p) {
#pragma unroll
      for (int m = 0; m < kMmaMTiles; ++m) cur[p][m][0] = next[p][m][0], cur[p][m][1] = next[p][m][1];
    }
  }
}

// Fragment layout (PTX ISA, m16n8k8 .tf32), thread (gid = lane / 4, tid = lane % 4):
// A a0 = (row gid, k tid), a1 = (gid + 8, tid), a2 = (gid, tid + 4), a3 = (gid + 8, tid + 4);
// B b0 = (k tid, token gid), b1 = (k tid + 4, token gid); C c0, c1 = (row gid, tokens 2 tid,
// 2 tid + 1), c2, c3 = (row gid + 8, same tokens).
// Block: kWarps warps; warp w takes rows group w / split and steps w % split (mod split).
template <FloatFormat F>
__global__ void __launch_bounds__(kThreads)
    FloatMatMulMmaKernel(FloatWeightView w, const float* __restrict__ x, int n_tokens, int split,
                         float* __restrict__ out) {
  __shared__ float partial[kWarps][kMmaAccs][32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int gid = lane >> 2;
  const int tid = lane & 3;
  const int k_part = warp % split;
  const int64_t row_base = (int64_t{blockIdx.x} * (kWarps / split) + warp / split) * kMmaWarpRows;
  const uint16_t* wr[kMmaMTiles][2];
#pragma unroll
  for (int m = 0; m < kMmaMTiles; ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = min(row_base + 16 * m + 8 * h + gid, w.rows - 1);  // rows past the end: discarded
      wr[m][h] = static_cast<const uint16_t*>(w.data) + row * w.row_stride;
    }
  }
  const int token0 = blockIdx.y * kMmaTileTokens;
  const float* xr[kMmaNTiles];
#pragma unroll
  for (int nt = 0; nt < kMmaNTiles; ++nt) {
    xr[nt] = x + int64_t{min(token0 + 8 * nt + gid, n_tokens - 1)} * w.cols;  // past the end: discarded
  }
  const bool vec_x = w.cols % 4 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0;
  const int64_t n_steps = (w.cols + kMmaStepCols - 1) / kMmaStepCols;
  const int n_tiles = min(kMmaNTiles, (n_tokens - token0 + 7) / 8);  // >= 1; uniform over the block

  float acc[kMmaMTiles][kMmaNTiles][4] = {};
  switch (n_tiles) {
    case 1:
      MmaRowTile<F, 1>(wr, xr, k_part, split, n_steps, tid, w.cols, vec_x, acc);
      break;
    case 2:
      MmaRowTile<F, 2>(wr, xr, k_part, split, n_steps, tid, w.cols, vec_x, acc);
      break;
    case 3:
      MmaRowTile<F, 3>(wr, xr, k_part, split, n_steps, tid, w.cols, vec_x, acc);
      break;
    default:
      MmaRowTile<F, 4>(wr, xr, k_part, split, n_steps, tid, w.cols, vec_x, acc);
      break;
  }

  if (split > 1) {  // uniform over the block
#pragma unroll
    for (int m = 0; m < kMmaMTiles; ++m) {
#pragma unroll
      for (int nt = 0; nt < kMmaNTiles; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) partial[warp][(m * kMmaNTiles + nt) * 4 + i][lane] = acc[m][nt][i];
      }
    }
    __syncthreads();
    if (k_part != 0) return;
    for (int p = 1; p < split; ++p) {
#pragma unroll
      for (int m = 0; m < kMmaMTiles; ++m) {
#pragma unroll
        for (int nt = 0; nt < kMmaNTiles; ++nt) {
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[m][nt][i] += partial[warp + p][(m * kMmaNTiles + nt) * 4 + i][lane];
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kMmaMTiles; ++m) {
#pragma unroll
    for (int nt = 0; nt < kMmaNTiles; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = row_base + 16 * m + gid + (i < 2 ? 0 : 8);
        const int tok = token0 + 8 * nt + 2 * tid + (i & 1);
        if (row < w.rows && tok < n_tokens) out[int64_t{tok} * w.rows + row] = acc[m][nt][i];
      }
    }
  }
}

}  // namespace

cudaError_t LaunchFloatMatMul(const FloatWeightView& w, const float* x, int n_tokens, float* out,
                              cudaStream_t stream) {
  if (n_tokens < 0 || w.rows <= 0 || w.cols <= 0 || w.row_stride < w.cols || w.row_stride % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  if (n_tokens == 0) return cudaSuccess;
  if (n_tokens > kFloatMatVecMaxTokens && w.format != FloatFormat::kF32) {
    const int64_t token_tiles = (n_tokens + kMmaTileTokens - 1) / kMmaTileTokens;
    int split = 1;
    const auto row_blocks = [&](int s) {
      const int64_t block_rows = int64_t{kMmaWarpRows} * (kWarps / s);
      return (w.rows + block_rows - 1) / block_rows;
    };
    while (split < kWarps && row_blocks(split) * token_tiles < kMmaMinBlocks) split *= 2;
    if (token_tiles > 65535 || row_blocks(split) > 0x7fffffff) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(row_blocks(split)), static_cast<unsigned>(token_tiles));
    if (w.format == FloatFormat::kF16) {
      FloatMatMulMmaKernel<FloatFormat::kF16><<<grid, kThreads, 0, stream>>>(w, x, n_tokens, split, out);
    } else {
      FloatMatMulMmaKernel<FloatFormat::kBF16><<<grid, kThreads, 0, stream>>>(w, x, n_tokens, split, out);
    }
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>((w.rows + kWarps - 1) / kWarps));
  switch (w.format) {
    case FloatFormat::kF32:
      FloatMatMulKernel<FloatFormat::kF32><<<grid, kThreads, 0, stream>>>(w, x, n_tokens, out);
      break;
    case FloatFormat::kF16:
      FloatMatMulKernel<FloatFormat::kF16><<<grid, kThreads, 0, stream>>>(w, x, n_tokens, out);
      break;
    case FloatFormat::kBF16:
      FloatMatMulKernel<FloatFormat::kBF16><<<grid, kThreads, 0, stream>>>(w, x, n_tokens, out);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace bitfleet::kernels::cuda

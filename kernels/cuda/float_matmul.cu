// Float-weight (F32 / F16 / BF16) matmuls with float activations.
//
// - Mat-vec (up to kFloatMatVecMaxTokens tokens, and F32 weights at any batch): one warp per
//   row, 16-byte weight loads (8 elements per lane and step), float accumulation, tokens in
//   tiles of 4 so a weight chunk is loaded once per tile.
// - Larger batches of F16 / BF16 weights (LM heads in batched decode and prefill): TF32 tensor
//   cores (mma.sync m16n8k8). F16 and BF16 values are exact in TF32; each activation is split
//   as x = hi + lo with hi = tf32(x) and lo = tf32(x - hi), so the product keeps ~22 bits of x
//   (relative error <= 2^-22) at two MMAs per k-step. The tensor cores accumulate 64 columns at
//   a time, then a float add collects the chunks, so their accumulation rounding stays far
//   inside the 1e-5 budget. Block: 4 warps, each a 16-row tile, sharing one 32-token tile (the
//   activations are read once per 64 rows).
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

constexpr int kMmaNTiles = 4;                 // 32 tokens per block
constexpr int kMmaTileTokens = 8 * kMmaNTiles;
constexpr int kMmaBlockRows = kWarps * 16;     // 64
constexpr int kMmaChunk = 64;                  // columns per tensor-core accumulation

__device__ __forceinline__ uint32_t ToTf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

__device__ __forceinline__ void MmaTf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Weight (row, c) as TF32 bits: an exact conversion for F16 and BF16.
template <FloatFormat F>
__device__ __forceinline__ uint32_t WeightTf32(const uint16_t* __restrict__ row, int64_t c) {
  const uint16_t h = __ldg(row + c);
  return __float_as_uint(F == FloatFormat::kF16 ? HalfBitsToFloat(h) : Bf16BitsToFloat(h));
}

// Fragment layout (PTX ISA, m16n8k8 .tf32), thread (gid = lane / 4, tid = lane % 4):
// A a0 = (row gid, k tid), a1 = (gid + 8, tid), a2 = (gid, tid + 4), a3 = (gid + 8, tid + 4);
// B b0 = (k tid, token gid), b1 = (k tid + 4, token gid); C c0, c1 = (row gid, tokens 2 tid,
// 2 tid + 1), c2, c3 = (row gid + 8, same tokens).
template <FloatFormat F>
__global__ void __launch_bounds__(kThreads)
    FloatMatMulMmaKernel(FloatWeightView w, const float* __restrict__ x, int n_tokens, float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int gid = lane >> 2;
  const int tid = lane & 3;
  const int64_t row0 = int64_t{blockIdx.x} * kMmaBlockRows + (threadIdx.x >> 5) * 16 + gid;
  const int64_t row1 = row0 + 8;
  const uint16_t* w0 = static_cast<const uint16_t*>(w.data) + min(row0, w.rows - 1) * w.row_stride;
  const uint16_t* w1 = static_cast<const uint16_t*>(w.data) + min(row1, w.rows - 1) * w.row_stride;
  const int token0 = blockIdx.y * kMmaTileTokens;
  const float* xr[kMmaNTiles];
#pragma unroll
  for (int nt = 0; nt < kMmaNTiles; ++nt) xr[nt] = x + int64_t{min(token0 + 8 * nt + gid, n_tokens - 1)} * w.cols;

  float acc[kMmaNTiles][4] = {};
  const int64_t k_end = (w.cols + 7) / 8 * 8;  // within row_stride; weights are zero there
  for (int64_t k0 = 0; k0 < k_end; k0 += kMmaChunk) {
    float c[kMmaNTiles][4] = {};
    const int64_t chunk_end = min(k0 + kMmaChunk, k_end);
    for (int64_t kk = k0; kk < chunk_end; kk += 8) {
      const int64_t ca = kk + tid;
      const int64_t cb = ca + 4;
      const uint32_t a0 = WeightTf32<F>(w0, ca);
      const uint32_t a1 = WeightTf32<F>(w1, ca);
      const uint32_t a2 = WeightTf32<F>(w0, cb);
      const uint32_t a3 = WeightTf32<F>(w1, cb);
#pragma unroll
      for (int nt = 0; nt < kMmaNTiles; ++nt) {
        const float xa = ca < w.cols ? __ldg(xr[nt] + ca) : 0.0f;
        const float xb = cb < w.cols ? __ldg(xr[nt] + cb) : 0.0f;
        const uint32_t ha = ToTf32(xa);
        const uint32_t hb = ToTf32(xb);
        MmaTf32(c[nt], a0, a1, a2, a3, ha, hb);
        MmaTf32(c[nt], a0, a1, a2, a3, ToTf32(xa - __uint_as_float(ha)), ToTf32(xb - __uint_as_float(hb)));
      }
    }
#pragma unroll
    for (int nt = 0; nt < kMmaNTiles; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[nt][i] += c[nt][i];
    }
  }
#pragma unroll
  for (int nt = 0; nt < kMmaNTiles; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = i < 2 ? row0 : row1;
      const int tok = token0 + 8 * nt + 2 * tid + (i & 1);
      if (row < w.rows && tok < n_tokens) out[int64_t{tok} * w.rows + row] = acc[nt][i];
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
    const dim3 grid(static_cast<unsigned>((w.rows + kMmaBlockRows - 1) / kMmaBlockRows),
                    static_cast<unsigned>((n_tokens + kMmaTileTokens - 1) / kMmaTileTokens));
    if (grid.y > 65535) return cudaErrorInvalidValue;
    if (w.format == FloatFormat::kF16) {
      FloatMatMulMmaKernel<FloatFormat::kF16><<<grid, kThreads, 0, stream>>>(w, x, n_tokens, out);
    } else {
      FloatMatMulMmaKernel<FloatFormat::kBF16><<<grid, kThreads, 0, stream>>>(w, x, n_tokens, out);
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

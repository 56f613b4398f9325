// Quantized mat-mat for prefill and batched decode: int8 tensor cores (mma.sync m16n8k32,
// sm_80 and later) over the same weight layout as the mat-vec.
//
// Block tile: 64 rows (8 row groups) × 32 tokens, 8 warps = 2 row warps × 4 K parts. Warp
// (rw, kp) owns rows 32 rw .. 32 rw + 31 of the tile (two m16 row tiles, groups 4 rw .. 4 rw + 3)
// and the steps s ≡ kp (mod 4); the K parts' partial tiles are added in shared memory at the end,
// in a fixed order (deterministic).
//
// Pipeline, one "stage" = steps 4t .. 4t + 3 (one per K part), double-buffered:
// - activations (32 tokens × 4 steps) and the weight scales of the stage are staged in shared
//   memory with 16-byte cp.async by the whole block; the B fragments are read from there (token
//   rows padded by 16 bytes: the 32 lanes of a fragment read hit 32 distinct banks);
// - each warp loads its codes straight into registers with 16-byte streaming loads, one stage
//   ahead: lane (gid, tid) loads words 4 tid .. 4 tid + 3 of row gid of each of its 4 groups,
//   and a 4 × 4 transpose across the lane's quad (QuadTranspose) turns them into words
//   4i + tid, i = 0..3: the words kernels/cuda/weight_layout.h's MmaFragmentA expects (and
//   tests/gpu/cuda_layout_test.cc emulates).
// Integer products are scaled per block (ternary: per step; Q4/Q8: per k-step) into float
// accumulators. Q4/Q8 also multiply each k-step's products by the token's activation step of
// that 32-block (ActivationView::block_steps, staged with the activations), so per-token and
// per-block activations take the same path; ternary tiles are scaled by absmax / 127 at the end.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kKParts = 4;                       // warps splitting the steps
constexpr int kRowWarps = kWarps / kKParts;      // 2
constexpr int kWarpRowTiles = 2;                 // m16 row tiles per warp
constexpr int kWarpGroups = 2 * kWarpRowTiles;   // 4 row groups per warp
constexpr int kBlockGroups = kRowWarps * kWarpGroups;  // 8
constexpr int kBlockRows = kBlockGroups * kRowGroup;   // 64
constexpr int kNTiles = 4;                       // mma N tiles of 8 tokens
constexpr int kTileTokens = 8 * kNTiles;         // 32

// Shared memory of one stage: activations [kp][token][StepElems + 16] bytes, then the scales
// [kp][group of the block][ScaleBytes] (the scales of one group-step are contiguous in global
// memory: index (g * n_blocks + s * BlocksPerStep + j) * 8 + r), then for Q4_1 the tokens'
// block sums [kp][token][BlocksPerStep] (int32), then for Q4/Q8 the tokens' block steps
// [kp][token][BlocksPerStep] (float; a token's run is 16 bytes (Q4) or 8 (Q8), contiguous in
// block_steps, and the fragment reads of 2 tid and 2 tid + 1 fall in distinct banks).
__host__ __device__ constexpr int ActRowBytes(QuantFormat f) { return StepElems(f) + 16; }
__host__ __device__ constexpr int ActBytes(QuantFormat f) { return kKParts * kTileTokens * ActRowBytes(f); }
__host__ __device__ constexpr int ScaleBytes(QuantFormat f) {  // one group-step: d (+ m) of 8 rows
  return f == QuantFormat::kTernary ? 8 * 4 : (f == QuantFormat::kQ4_1 ? 2 : 1) * BlocksPerStep(f) * 8 * 2;
}
__host__ __device__ constexpr int ScaleAreaBytes(QuantFormat f) { return kKParts * kBlockGroups * ScaleBytes(f); }
__host__ __device__ constexpr int SumBytes(QuantFormat f) {
  return f == QuantFormat::kQ4_1 ? kKParts * kTileTokens * BlocksPerStep(f) * 4 : 0;
}
__host__ __device__ constexpr int StepBytes(QuantFormat f) {
  return f == QuantFormat::kTernary ? 0 : kKParts * kTileTokens * BlocksPerStep(f) * 4;
}
__host__ __device__ constexpr int StageBytes(QuantFormat f) {
  return ActBytes(f) + ScaleAreaBytes(f) + SumBytes(f) + StepBytes(f);
}
// The final reduction reuses the stage buffers: [kp][token][kRedStride] floats (row-fastest so
// the output writes are coalesced; stride 68 makes the fragment-order writes conflict-free).
constexpr int kRedStride = kBlockRows + 4;
constexpr int kRedBytes = kKParts * kTileTokens * kRedStride * 4;
__host__ __device__ constexpr int SmemBytes(QuantFormat f) {
  return 2 * StageBytes(f) > kRedBytes ? 2 * StageBytes(f) : kRedBytes;
}

__device__ __forceinline__ void MmaS8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                      uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared, asynchronously; `valid` false writes 16 zero bytes instead (src
// must still be a valid address).
__device__ __forceinline__ void CpAsync16(void* smem, const void* src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
// The same for 8 bytes (8-byte aligned; cp.async.cg takes 16 bytes only, .ca also 4 and 8).
__device__ __forceinline__ void CpAsync8(void* smem, const void* src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 8 : 0)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Lane (gid, tid) holds v[j] = word 4 tid + j of its row; afterwards v[i] = word 4i + tid (the
// word lane (gid, i) held at j = tid). Two butterfly rounds over the quad (xor 2, then xor 1):
// each lane swaps the two words whose index differs from its own in the round's bit.
__device__ __forceinline__ void QuadTranspose(uint32_t (&v)[4], int tid) {
  const bool hi2 = (tid & 2) != 0;
  uint32_t x0 = hi2 ? v[0] : v[2];
  uint32_t x1 = hi2 ? v[1] : v[3];
  x0 = __shfl_xor_sync(kFullMask, x0, 2);
  x1 = __shfl_xor_sync(kFullMask, x1, 2);
  if (hi2) {
    v[0] = x0;
    v[1] = x1;
  } else {
    v[2] = x0;
    v[3] = x1;
  }
  const bool hi1 = (tid & 1) != 0;
  x0 = hi1 ? v[0] : v[1];
  x1 = hi1 ? v[2] : v[3];
  x0 = __shfl_xor_sync(kFullMask, x0, 1);
  x1 = __shfl_xor_sync(kFullMask, x1, 1);
  if (hi1) {
    v[0] = x0;
    v[2] = x1;
  } else {
    v[1] = x0;
    v[3] = x1;
  }
}

// Queues the stage-t copies (activations and scales) of the whole block into `stage`.
template <QuantFormat F>
__device__ __forceinline__ void IssueStage(uint8_t* stage, const QuantWeightView& w, const ActivationView& x,
                                           int64_t t, int token0, int n_valid_tokens) {
  constexpr int kSE = StepElems(F);
  constexpr int kChunksPerRow = kSE / 16;
  constexpr int kActChunks = kKParts * kTileTokens * kChunksPerRow;
  for (int c = threadIdx.x; c < kActChunks; c += kThreads) {
    const int kp = c / (kTileTokens * kChunksPerRow);
    const int n = (c / kChunksPerRow) % kTileTokens;
    const int ch = c % kChunksPerRow;
    const int64_t s = t * kKParts + kp;
    const bool valid = s < w.n_steps && n < n_valid_tokens;
    const int8_t* src = valid ? x.q + int64_t{token0 + n} * x.stride + s * kSE + 16 * ch : x.q;
    CpAsync16(stage + (kp * kTileTokens + n) * ActRowBytes(F) + 16 * ch, src, valid);
  }
  constexpr int kScaleChunks = ScaleBytes(F) / 16;
  uint8_t* scales = stage + ActBytes(F);
  for (int c = threadIdx.x; c < kKParts * kBlockGroups * kScaleChunks; c += kThreads) {
    const int kp = c / (kBlockGroups * kScaleChunks);
    const int gq = (c / kScaleChunks) % kBlockGroups;
    const int ch = c % kScaleChunks;
    const int64_t s = t * kKParts + kp;
    const int64_t g = int64_t{blockIdx.x} * kBlockGroups + gq;
    const bool valid = s < w.n_steps && g < w.n_groups;
    const void* src = w.codes;
    if (valid) {
      const int64_t first = (g * w.n_blocks + s * BlocksPerStep(F)) * kRowGroup;  // scale index of (g, s, 0, 0)
      if constexpr (F == QuantFormat::kTernary) {
        src = w.scales + first + 4 * ch;
      } else if constexpr (F == QuantFormat::kQ4_1) {
        constexpr int kHalfChunks = kScaleChunks / 2;  // d chunks, then m chunks
        src = ch < kHalfChunks ? w.half_d + first + 8 * ch : w.half_m + first + 8 * (ch - kHalfChunks);
      } else {
        src = w.half_d + first + 8 * ch;
      }
    }
    CpAsync16(scales + (kp * kBlockGroups + gq) * ScaleBytes(F) + 16 * ch, src, valid);
  }
  if constexpr (F == QuantFormat::kQ4_1) {
    // The 4 block sums of a token's step: 16 contiguous bytes (sums rows are stride / 32 ints).
    static_assert(BlocksPerStep(F) == 4);
    uint8_t* sums = scales + ScaleAreaBytes(F);
    for (int c = threadIdx.x; c < kKParts * kTileTokens; c += kThreads) {
      const int kp = c / kTileTokens;
      const int n = c % kTileTokens;
      const int64_t s = t * kKParts + kp;
      const bool valid = s < w.n_steps && n < n_valid_tokens;
      const int32_t* src = valid ? x.sums + int64_t{token0 + n} * (x.stride / 32) + s * BlocksPerStep(F) : x.sums;
      CpAsync16(sums + 16 * c, src, valid);
    }
  }
  if constexpr (F != QuantFormat::kTernary) {
    // The BlocksPerStep steps of a token's step (16 or 8 bytes; block_steps rows are stride / 32
    // floats, a multiple of 32 bytes). Zero for missing tokens and steps.
    constexpr int kRunBytes = BlocksPerStep(F) * 4;
    uint8_t* steps = scales + ScaleAreaBytes(F) + SumBytes(F);
    for (int c = threadIdx.x; c < kKParts * kTileTokens; c += kThreads) {
      const int kp = c / kTileTokens;
      const int n = c % kTileTokens;
      const int64_t s = t * kKParts + kp;
      const bool valid = s < w.n_steps && n < n_valid_tokens;
      const float* src =
          valid ? x.block_steps + int64_t{token0 + n} * (x.stride / 32) + s * BlocksPerStep(F) : x.block_steps;
      if constexpr (kRunBytes == 16) {
        CpAsync16(steps + kRunBytes * c, src, valid);
      } else {
        static_assert(kRunBytes == 8);
        CpAsync8(steps + kRunBytes * c, src, valid);
      }
    }
  }
}

// The raw codes of one step for the warp's 4 groups (lane: words 4 tid .. 4 tid + 3 of row gid).
__device__ __forceinline__ void LoadCodes(uint4 (&raw)[kWarpGroups], const QuantWeightView& w, int64_t g0, int64_t s,
                                          int gid, int tid) {
#pragma unroll
  for (int q = 0; q < kWarpGroups; ++q) {
    raw[q] = make_uint4(0, 0, 0, 0);
    if (s < w.n_steps && g0 + q < w.n_groups) {
      raw[q] = LoadStreaming(reinterpret_cast<const uint4*>(w.codes + CodeOffset(g0 + q, s, gid, w.n_steps)) + tid);
    }
  }
}

template <QuantFormat F>
__global__ void __launch_bounds__(kThreads, 2) QuantMatMulMmaKernel(QuantWeightView w, ActivationView x, float* out) {
  constexpr int kKSteps = MmaKSteps(F);
  extern __shared__ __align__(16) uint8_t smem[];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int gid = lane >> 2;
  const int tid = lane & 3;
  const int rw = warp % kRowWarps;
  const int kp = warp / kRowWarps;
  const int64_t g0 = int64_t{blockIdx.x} * kBlockGroups + kWarpGroups * rw;  // the warp's first group
  const int token0 = blockIdx.y * kTileTokens;
  const int n_valid_tokens = min(kTileTokens, x.n_tokens - token0);
  const int n_ntiles = (n_valid_tokens + 7) / 8;  // n-tiles with a valid token (warp-uniform)
  const int64_t n_stages = (w.n_steps + kKParts - 1) / kKParts;
  // Row tile rt of the warp has groups g0 + 2 rt (rows gid: a0/a2) and g0 + 2 rt + 1 (a1/a3).
  const bool tile_valid[kWarpRowTiles] = {g0 < w.n_groups, g0 + 2 < w.n_groups};

  float acc[kWarpRowTiles][kNTiles][4];
#pragma unroll
  for (int rt = 0; rt < kWarpRowTiles; ++rt) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[rt][nt][i] = 0.0f;
    }
  }

  uint4 next[kWarpGroups];
  IssueStage<F>(smem, w, x, 0, token0, n_valid_tokens);
  CpAsyncCommit();
  LoadCodes(next, w, g0, kp, gid, tid);

  for (int64_t t = 0; t < n_stages; ++t) {
    uint4 raw[kWarpGroups];
#pragma unroll
    for (int q = 0; q < kWarpGroups; ++q) raw[q] = next[q];
    if (t + 1 < n_stages) {
      IssueStage<F>(smem + ((t + 1) & 1) * StageBytes(F), w, x, t + 1, token0, n_valid_tokens);
      CpAsyncCommit();
      LoadCodes(next, w, g0, (t + 1) * kKParts + kp, gid, tid);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();

    const int64_t s = t * kKParts + kp;
    if (s < w.n_steps) {  // warp-uniform
      const uint8_t* stage = smem + (t & 1) * StageBytes(F);
      const uint8_t* act = stage + kp * kTileTokens * ActRowBytes(F) + 4 * tid;
      const uint8_t* scales = stage + ActBytes(F) + (kp * kBlockGroups + kWarpGroups * rw) * ScaleBytes(F);
      // Q4_1: block sums of the stage's tokens, [token][block of the step]; Q4/Q8: their steps.
      const int32_t* sums = reinterpret_cast<const int32_t*>(stage + ActBytes(F) + ScaleAreaBytes(F)) +
                            kp * kTileTokens * BlocksPerStep(F);
      const float* steps = reinterpret_cast<const float*>(stage + ActBytes(F) + ScaleAreaBytes(F) + SumBytes(F)) +
                           kp * kTileTokens * BlocksPerStep(F);
      uint32_t words[kWarpGroups][4];
#pragma unroll
      for (int q = 0; q < kWarpGroups; ++q) {
        words[q][0] = raw[q].x;
        words[q][1] = raw[q].y;
        words[q][2] = raw[q].z;
        words[q][3] = raw[q].w;
        QuadTranspose(words[q], tid);
      }
      int ci[kWarpRowTiles][kNTiles][4];
#pragma unroll
      for (int rt = 0; rt < kWarpRowTiles; ++rt) {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int i = 0; i < 4; ++i) ci[rt][nt][i] = 0;
        }
      }
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        uint32_t a[kWarpRowTiles][4];
#pragma unroll
        for (int rt = 0; rt < kWarpRowTiles; ++rt) {
          MmaFragmentA<F>(words[2 * rt], ks, &a[rt][0], &a[rt][2]);
          MmaFragmentA<F>(words[2 * rt + 1], ks, &a[rt][1], &a[rt][3]);
        }
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          if (nt < n_ntiles) {
            // B fragment: token 8 nt + gid, k = 4 tid .. +3 (b0) and 16 + 4 tid .. +3 (b1).
            const uint8_t* b = act + (8 * nt + gid) * ActRowBytes(F) + 32 * ks;
            const uint32_t b0 = *reinterpret_cast<const uint32_t*>(b);
            const uint32_t b1 = *reinterpret_cast<const uint32_t*>(b + 16);
#pragma unroll
            for (int rt = 0; rt < kWarpRowTiles; ++rt) {
              if (tile_valid[rt]) MmaS8(ci[rt][nt], a[rt][0], a[rt][1], a[rt][2], a[rt][3], b0, b1);
            }
          }
        }
        if constexpr (F != QuantFormat::kTernary) {
          // One 32-block per k-step: scale now and restart the integer sums. Columns 2 tid and
          // 2 tid + 1 of n-tile nt are two tokens, each with its own step in this block (zero
          // for tokens past the batch); n-tiles without a valid token have ci = 0 and are skipped.
#pragma unroll
          for (int rt = 0; rt < kWarpRowTiles; ++rt) {
            const uint16_t* d_lo = reinterpret_cast<const uint16_t*>(scales + (2 * rt) * ScaleBytes(F));
            const uint16_t* d_hi = reinterpret_cast<const uint16_t*>(scales + (2 * rt + 1) * ScaleBytes(F));
            const float d0 = HalfBitsToFloat(d_lo[8 * ks + gid]);
            const float d1 = HalfBitsToFloat(d_hi[8 * ks + gid]);
            float m0 = 0.0f;
            float m1 = 0.0f;
            if constexpr (F == QuantFormat::kQ4_1) {
              m0 = HalfBitsToFloat(d_lo[8 * BlocksPerStep(F) + 8 * ks + gid]);
              m1 = HalfBitsToFloat(d_hi[8 * BlocksPerStep(F) + 8 * ks + gid]);
            }
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt) {
              if (nt < n_ntiles) {
                const int col = 8 * nt + 2 * tid;
                const float step_a = steps[col * BlocksPerStep(F) + ks];
                const float step_b = steps[(col + 1) * BlocksPerStep(F) + ks];
                // step × (d dot + m sum), as the CPU kernels (m = 0 but for Q4_1).
                int (&c)[4] = ci[rt][nt];
                float v[4] = {d0 * static_cast<float>(c[0]), d0 * static_cast<float>(c[1]),
                              d1 * static_cast<float>(c[2]), d1 * static_cast<float>(c[3])};
                if constexpr (F == QuantFormat::kQ4_1) {
                  const float sum_a = static_cast<float>(sums[col * BlocksPerStep(F) + ks]);
                  const float sum_b = static_cast<float>(sums[(col + 1) * BlocksPerStep(F) + ks]);
                  v[0] += m0 * sum_a;
                  v[1] += m0 * sum_b;
                  v[2] += m1 * sum_a;
                  v[3] += m1 * sum_b;
                }
                acc[rt][nt][0] += step_a * v[0];
                acc[rt][nt][1] += step_b * v[1];
                acc[rt][nt][2] += step_a * v[2];
                acc[rt][nt][3] += step_b * v[3];
#pragma unroll
                for (int i = 0; i < 4; ++i) c[i] = 0;
              }
            }
          }
        }
      }
      if constexpr (F == QuantFormat::kTernary) {
#pragma unroll
        for (int rt = 0; rt < kWarpRowTiles; ++rt) {
          const float d0 = reinterpret_cast<const float*>(scales + (2 * rt) * ScaleBytes(F))[gid];
          const float d1 = reinterpret_cast<const float*>(scales + (2 * rt + 1) * ScaleBytes(F))[gid];
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
            acc[rt][nt][0] += d0 * static_cast<float>(ci[rt][nt][0]);
            acc[rt][nt][1] += d0 * static_cast<float>(ci[rt][nt][1]);
            acc[rt][nt][2] += d1 * static_cast<float>(ci[rt][nt][2]);
            acc[rt][nt][3] += d1 * static_cast<float>(ci[rt][nt][3]);
          }
        }
      }
    }
    __syncthreads();  // the stage is read; the next iteration may overwrite this buffer
  }

  // Add the K parts' partial tiles: red[kp][token][row of the block tile]. No cp.async is in
  // flight (wait_group 0 on the last stage) and the loop ended with a barrier.
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int rt = 0; rt < kWarpRowTiles; ++rt) {
    const int row = 32 * rw + 16 * rt + gid;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      const int col = 8 * nt + 2 * tid;
      float* p = red + (kp * kTileTokens + col) * kRedStride + row;
      p[0] = acc[rt][nt][0];
      p[kRedStride] = acc[rt][nt][1];
      p[8] = acc[rt][nt][2];
      p[kRedStride + 8] = acc[rt][nt][3];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kBlockRows * kTileTokens; i += kThreads) {
    const int row_in_tile = i % kBlockRows;
    const int col = i / kBlockRows;
    const int64_t row = int64_t{blockIdx.x} * kBlockRows + row_in_tile;
    const int tok = token0 + col;
    if (row >= w.rows || tok >= x.n_tokens) continue;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < kKParts; ++k) v += red[(k * kTileTokens + col) * kRedStride + row_in_tile];
    // Q4 / Q8 tiles are already in real units (block steps).
    out[int64_t{tok} * w.rows + row] = F == QuantFormat::kTernary ? v * (x.absmax[tok] / 127.0f) : v;
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <QuantFormat F>
cudaError_t Launch(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((w.n_groups + kBlockGroups - 1) / kBlockGroups),
                  static_cast<unsigned>((x.n_tokens + kTileTokens - 1) / kTileTokens));
  if (grid.y > 65535) return cudaErrorInvalidValue;
  constexpr int kSmem = SmemBytes(F);
  if constexpr (kSmem > 48 * 1024) {
    // Per device and function; cheap, so set on every launch rather than tracking devices.
    const cudaError_t e =
        cudaFuncSetAttribute(QuantMatMulMmaKernel<F>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    if (e != cudaSuccess) return e;
  }
  QuantMatMulMmaKernel<F><<<grid, kThreads, kSmem, stream>>>(w, x, out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchQuantMatMulMma(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  if (x.n_tokens < 0 || x.cols != w.cols || w.n_groups <= 0 || x.stride < w.n_steps * StepElems(w.format) ||
      !ActivationsFit(w.format, x)) {
    return cudaErrorInvalidValue;
  }
  // 16-byte cp.async / vector loads: codes, activation rows and the scale arrays (group-step
  // slices of the scales are 32 or 64 bytes, so any group-aligned view keeps this), the sums and
  // the block steps (a step's run of Q8_0 steps is 8 bytes, of Q4 16, at multiples of its size).
  if (!Aligned16(w.codes) || !Aligned16(x.q) || x.stride % 16 != 0 || !Aligned16(w.scales) ||
      !Aligned16(w.half_d) || !Aligned16(w.half_m) || !Aligned16(x.sums) || !Aligned16(x.block_steps)) {
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
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace bitfleet::kernels::cuda

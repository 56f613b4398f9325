// The tensor-core single-token mat-vec for ternary weights (QuantMatVecOptions::kernel =
// kTensorCore): int8 mma.sync, bit for bit the general kernel's outputs.
#include "kernels/cuda/quant_matvec_parts.cuh"

namespace bitfleet::kernels::cuda::matvec {
namespace {

// A warp multiplies a tile of two row groups (16 rows) by the token with mma.sync m16n8k32
// (u8 codes × s8 activations): one mma covers 16 rows × 32 elements, where the dp4a kernel
// spends 16 dp4a (and the same 16 masks) on them, and its addressing is taken out of the step
// as in quant_matvec_lean.cu. sm_90 SASS: ~61 instructions per 512 weight bytes in the main
// loop, against ~94 for the general kernel and ~80 for the lean one (docs/cuda.md).
//
// The lanes load exactly what the dp4a kernel's lanes load, two row groups at once: lane
// (gid, tid) holds quarter tid of row gid of both groups, which is the
// A fragment (rows gid and gid + 8; k-slots 4 tid.. and 16 + 4 tid..) of every mma of the
// step once its words are masked to one 2-bit field, and the activation words that pair with
// them are the B fragment (every column holds the token, so all of C's columns agree). Field k
// sits in place at bits 2k, weighing 4^k: each field has its own accumulator, divided out
// exactly after the step, and the code offset goes out through the block sums. Each row's step
// is thus the same integer as in the dp4a kernel, scaled and summed in the same order: the
// outputs are bit for bit those of QuantMatVecKernel<kTernary, 1>.
constexpr int kTcUnroll = 2;  // steps per warp with loads in flight together
// Two steps of two row groups in flight take ~110 registers: 4 blocks per multiprocessor, not
// 5 (one step in flight fits 88 registers, but halves the bytes in flight per warp).
constexpr int kTcMinBlocksPerSm = 4;

struct TcChunk {
  uint4 lo[kTcUnroll];  // row gid of the tile's first group: the lane's 16 code bytes
  uint4 hi[kTcUnroll];  // row gid of its second group (zero past the last group)
  float d_lo[kTcUnroll];
  float d_hi[kTcUnroll];
};

// c += a × b for one m16n8k32 tile, unsigned 8-bit a, signed 8-bit b.
__device__ __forceinline__ void MmaU8S8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Where this lane's reads of step `warp` of tile 0 start (as LeanLane): row gid of group 0.
struct TcLane {
  const uint8_t* codes;  // its 16 code bytes; the second group's lie group_bytes further
  const float* scales;   // its row's scale; the second group's lies group_scales further
  const int8_t* x;       // its first activation byte (LaneActBase)
  const int32_t* sums;   // its two block sums (LaneSumsBase)
  int64_t group_bytes;
  int64_t group_scales;
  int n_steps;
};

__device__ __forceinline__ TcLane MakeTcLane(const QuantWeightView& w, const ActivationView& x) {
  constexpr QuantFormat F = QuantFormat::kTernary;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  TcLane l;
  l.codes = w.codes + CodeOffset(0, warp, lane >> 2, w.n_steps) + 16 * (lane & 3);
  l.scales = w.scales + ScaleIndex(0, warp, lane >> 2, w.n_blocks);
  l.x = x.q + warp * StepElems(F) + LaneActBase(F, lane & 3);
  l.sums = x.sums + warp * (StepElems(F) / 32) + LaneSumsBase(F, lane & 3);
  l.group_bytes = w.n_steps * kGroupStepBytes;
  l.group_scales = w.n_blocks * kRowGroup;
  l.n_steps = static_cast<int>(w.n_steps);
  return l;
}

// Whether step j of this warp (s = j * kWarps + warp) is in the row.
__device__ __forceinline__ bool TcStepInRow(const TcLane& l, int j) {
  return j * kWarps + static_cast<int>(threadIdx.x >> 5) < l.n_steps;
}

// Chunk k of tile `tile` for this lane: its warp's steps j = k * kTcUnroll + u.
__device__ __forceinline__ void LoadTcChunk(const TcLane& l, int64_t tile, int64_t n_groups, int k, TcChunk& c) {
  constexpr QuantFormat F = QuantFormat::kTernary;
  const bool has_hi = 2 * tile + 1 < n_groups;
  const int first = k * kTcUnroll;
  const uint8_t* lo = l.codes + 2 * tile * l.group_bytes + first * kWarpCodeStride<F>;
  const uint8_t* hi = lo + l.group_bytes;
  const float* d_lo = l.scales + 2 * tile * l.group_scales + first * kWarpScaleStride<F>;
  const float* d_hi = d_lo + l.group_scales;
#pragma unroll
  for (int u = 0; u < kTcUnroll; ++u) {
    if (!TcStepInRow(l, first + u)) continue;
    c.lo[u] = LoadStreaming(reinterpret_cast<const uint4*>(lo + u * kWarpCodeStride<F>));
    c.d_lo[u] = __ldg(d_lo + u * kWarpScaleStride<F>);
    c.hi[u] = make_uint4(0, 0, 0, 0);
    c.d_hi[u] = 0.0f;
    if (has_hi) {
      c.hi[u] = LoadStreaming(reinterpret_cast<const uint4*>(hi + u * kWarpCodeStride<F>));
      c.d_hi[u] = __ldg(d_hi + u * kWarpScaleStride<F>);
    }
  }
}

// Adds a step of the tile to the lane's sums of rows gid (acc[0]) and gid + 8 (acc[1]); `xs`
// and `sums` are the lane's activation and block-sum pointers at that step.
__device__ __forceinline__ void ComputeTcStep(const int8_t* xs, const int32_t* sums, const uint4& lo, const uint4& hi,
                                              float d_lo, float d_hi, float (&acc)[2]) {
  // The code offset (c = w + 1) of the row's step: the sum of the step's 8 block sums, two per
  // lane of the quad (as LaneDotAt subtracts them).
  int offset = __ldg(sums) + __ldg(sums + 1);
  offset += __shfl_xor_sync(kFullMask, offset, 1);
  offset += __shfl_xor_sync(kFullMask, offset, 2);
  // Field k's sum is a multiple of 4^k: the shift divides it out exactly. C element 0 is row
  // gid, element 2 row gid + 8 (any column: they all hold the token).
  int dot_lo = -offset;
  int dot_hi = -offset;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    uint32_t a[4];
    LoadActivation16(xs + 32 * k, a);
    const uint32_t mask = 0x03030303u << (2 * k);
    int field[4] = {0, 0, 0, 0};
    MmaU8S8(field, lo.x & mask, hi.x & mask, lo.y & mask, hi.y & mask, a[0], a[1]);
    MmaU8S8(field, lo.z & mask, hi.z & mask, lo.w & mask, hi.w & mask, a[2], a[3]);
    dot_lo += field[0] >> (2 * k);
    dot_hi += field[2] >> (2 * k);
  }
  acc[0] += d_lo * static_cast<float>(dot_lo);
  acc[1] += d_hi * static_cast<float>(dot_hi);
}

// Adds chunk k (this warp's steps j = k * kTcUnroll + u) of the current tile to acc.
__device__ __forceinline__ void ComputeTcChunk(const TcLane& l, int k, const TcChunk& c, float (&acc)[2]) {
  constexpr QuantFormat F = QuantFormat::kTernary;
  const int first = k * kTcUnroll;
  const int8_t* xs = l.x + first * kWarpActStride<F>;
  const int32_t* sums = l.sums + first * kWarpSumStride<F>;
#pragma unroll
  for (int u = 0; u < kTcUnroll; ++u) {
    if (!TcStepInRow(l, first + u)) break;
    ComputeTcStep(xs + u * kWarpActStride<F>, sums + u * kWarpSumStride<F>, c.lo[u], c.hi[u], c.d_lo[u], c.d_hi[u],
                  acc);
  }
}

// The tile is done: sums the warps' rows (FinishGroup's order) and writes the 16 outputs. Every
// thread of the block must call it (two barriers).
__device__ __forceinline__ void FinishTcTile(const QuantWeightView& w, const ActivationView& x, float* out,
                                             int64_t tile, float (&acc)[2], float (&partial)[kWarps][2 * kRowGroup]) {
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  if ((lane & 3) == 0) {
    partial[warp][lane >> 2] = acc[0];
    partial[warp][(lane >> 2) + kRowGroup] = acc[1];
  }
  acc[0] = 0.0f;
  acc[1] = 0.0f;
  __syncthreads();
  if (threadIdx.x < 2 * kRowGroup) {
    const int64_t row = tile * 2 * kRowGroup + threadIdx.x;
    if (row < w.rows) {
      float v = 0.0f;
#pragma unroll
      for (int j = 0; j < kWarps; ++j) v += partial[j][threadIdx.x];
      out[row] = v * (x.absmax[0] / 127.0f);
    }
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads, kTcMinBlocksPerSm)
    QuantMatVecTensorCoreKernel(QuantWeightView w, ActivationView x, float* out, WeightPrefetch prefetch,
                                uint32_t prefetch_blocks) {
  AllowDependentLaunch();
  PrefetchWeight<QuantFormat::kTernary>(w, prefetch, prefetch_blocks);
  const TcLane lane = MakeTcLane(w, x);
  const int64_t tiles = (w.n_groups + 1) / 2;
  const int chunks = (lane.n_steps + kWarps * kTcUnroll - 1) / (kWarps * kTcUnroll);
  TcChunk cur;
  if (blockIdx.x < tiles) LoadTcChunk(lane, blockIdx.x, w.n_groups, 0, cur);
  WaitForPrerequisiteGrids();
  __shared__ float partial[kWarps][2 * kRowGroup];
  float acc[2] = {0.0f, 0.0f};
  WalkChunks(
      tiles, chunks, cur, [&](int64_t tile, int k, TcChunk& c) { LoadTcChunk(lane, tile, w.n_groups, k, c); },
      [&](int k, const TcChunk& c) { ComputeTcChunk(lane, k, c, acc); },
      [&](int64_t tile) { FinishTcTile(w, x, out, tile, acc, partial); });
}

}  // namespace

cudaError_t LaunchTensorCoreMatVec(const QuantWeightView& w, const ActivationView& x, float* out,
                                   WeightPrefetch prefetch, uint32_t prefetch_blocks, cudaStream_t stream) {
  if (w.format != QuantFormat::kTernary) return cudaErrorInvalidValue;
  return LaunchDependent(QuantMatVecTensorCoreKernel,
                         dim3(GridFor<QuantMatVecTensorCoreKernel>((w.n_groups + 1) / 2)), dim3(kThreads), stream, w,
                         x, out, prefetch, prefetch_blocks);
}

}  // namespace bitfleet::kernels::cuda::matvec

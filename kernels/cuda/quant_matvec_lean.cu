// The lean single-token mat-vec (QuantMatVecOptions::kernel = kLean): the general kernel's
// lanes, steps and sums (kernels/cuda/quant_matvec.cu) with the addressing taken out of the step.
#include "kernels/cuda/quant_matvec_parts.cuh"

namespace bitfleet::kernels::cuda::matvec {
namespace {

// The lanes, steps, products and summation order of MatVecBlocks<F, 1>, hence the same bits,
// with the addressing taken out of the step: a lane's reads of step s = (k * kUnroll + u) *
// kWarps + warp lie at fixed offsets from per-lane pointers, so a step costs its loads (with
// immediate offsets) and its arithmetic. The general kernel recomputes 64-bit indices from s
// for every load: sm_90 SASS of the ternary main loop, ~94 instructions per step against ~80
// here (docs/cuda.md).
template <QuantFormat F>
struct LeanLane {
  // Step `warp` of row group 0, this lane's row r and quarter; null where the format has none.
  const uint8_t* codes = nullptr;     // its 16 code bytes
  const float* scales = nullptr;      // ternary: its scale
  const uint16_t* half_d = nullptr;   // Q4 / Q8: its block's fp16 d (and m)
  const uint16_t* half_m = nullptr;
  const int8_t* x = nullptr;          // its first activation byte (LaneActBase)
  const int32_t* sums = nullptr;      // its first block sum (LaneSumsBase); Q4_1: its block's
  const float* steps = nullptr;       // Q4 / Q8: its block's activation step
  uint64_t group_codes = 0;           // bytes from one row group's codes to the next
  uint64_t group_scales = 0;          // scale entries from one row group to the next
};

template <QuantFormat F>
__device__ __forceinline__ LeanLane<F> MakeLeanLane(const QuantWeightView& w, const ActivationView& x) {
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int r = lane >> 2;
  const int quarter = lane & 3;
  LeanLane<F> l;
  l.codes = w.codes + CodeOffset(0, warp, r, w.n_steps) + 16 * quarter;
  const uint64_t scale = ScaleIndex(0, warp * BlocksPerStep(F) + LaneBlock(F, quarter), r, w.n_blocks);
  // Only the arrays of this format: the others are null in its view.
  if constexpr (F == QuantFormat::kTernary) {
    l.scales = w.scales + scale;
  } else {
    l.half_d = w.half_d + scale;
    if constexpr (F == QuantFormat::kQ4_1) l.half_m = w.half_m + scale;
  }
  l.x = x.q + warp * StepElems(F) + LaneActBase(F, quarter);
  const int first_block = warp * StepElems(F) / 32;
  l.sums = x.sums + first_block + (F == QuantFormat::kQ4_1 ? LaneBlock(F, quarter) : LaneSumsBase(F, quarter));
  if constexpr (F != QuantFormat::kTernary) l.steps = x.block_steps + first_block + LaneBlock(F, quarter);
  l.group_codes = static_cast<uint64_t>(w.n_steps) * kGroupStepBytes;
  l.group_scales = static_cast<uint64_t>(w.n_blocks) * kRowGroup;
  return l;
}

// LoadChunk for the lean kernel: chunk k of row group g (steps (k * kUnroll + u) * kWarps +
// warp), steps past the row not loaded.
template <QuantFormat F>
__device__ __forceinline__ void LoadLeanChunk(const LeanLane<F>& l, int64_t g, int k, int n_steps, Chunk<F>& c) {
  const int warp = threadIdx.x >> 5;
  const int first = k * kUnroll;  // this warp's step index j of u = 0
  const uint8_t* codes = l.codes + g * l.group_codes + static_cast<uint64_t>(first) * kWarpCodeStride<F>;
  const uint64_t scale = g * l.group_scales + static_cast<uint64_t>(first) * kWarpScaleStride<F>;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if ((first + u) * kWarps + warp >= n_steps) continue;
    c.codes[u] = LoadStreaming(reinterpret_cast<const uint4*>(codes + u * kWarpCodeStride<F>));
    if constexpr (F == QuantFormat::kTernary) {
      c.d[u] = __ldg(l.scales + scale + u * kWarpScaleStride<F>);
    } else {
      c.d[u] = HalfBitsToFloat(__ldg(l.half_d + scale + u * kWarpScaleStride<F>));
      if constexpr (F == QuantFormat::kQ4_1) {
        c.m[u] = HalfBitsToFloat(__ldg(l.half_m + scale + u * kWarpScaleStride<F>));
      }
    }
  }
}

// ComputeChunk for the lean kernel (one token).
template <QuantFormat F>
__device__ __forceinline__ void ComputeLeanChunk(const LeanLane<F>& l, int k, int n_steps, const Chunk<F>& c,
                                                 float& acc) {
  const int warp = threadIdx.x >> 5;
  const int first = k * kUnroll;
  const int8_t* x = l.x + first * kWarpActStride<F>;
  const int32_t* sums = l.sums + first * kWarpSumStride<F>;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if ((first + u) * kWarps + warp >= n_steps) break;
    const uint32_t words[4] = {c.codes[u].x, c.codes[u].y, c.codes[u].z, c.codes[u].w};
    const int dot = LaneDotAt<F>(words, x + u * kWarpActStride<F>, sums + u * kWarpSumStride<F>);
    float m = 0.0f;
    if constexpr (F == QuantFormat::kQ4_1) m = c.m[u];
    AddLaneDot<F>(dot, c.d[u], m, l.sums, l.steps, (first + u) * kWarpSumStride<F>, acc);
  }
}

// MatVecBlocks<F, 1> over the lean loads and steps.
template <QuantFormat F>
__device__ __forceinline__ void LeanMatVecBlocks(const QuantWeightView& w, const ActivationView& x, float* out,
                                                 const LeanLane<F>& l, Chunk<F>& cur,
                                                 float (&partial)[kWarps][kRowGroup][1]) {
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int r = lane >> 2;
  const int quarter = lane & 3;
  const int n_steps = static_cast<int>(w.n_steps);
  const int chunks = (n_steps + kWarps * kUnroll - 1) / (kWarps * kUnroll);
  float acc[1] = {0.0f};
  WalkChunks(
      w.n_groups, chunks, cur, [&](int64_t g, int k, Chunk<F>& c) { LoadLeanChunk<F>(l, g, k, n_steps, c); },
      [&](int k, const Chunk<F>& c) { ComputeLeanChunk<F>(l, k, n_steps, c, acc[0]); },
      [&](int64_t g) { FinishGroup<F, 1>(w, x, out, g, warp, r, quarter, acc, partial); });
}

template <QuantFormat F>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<1>)
    QuantMatVecLeanKernel(QuantWeightView w, ActivationView x, float* out, WeightPrefetch prefetch,
                          uint32_t prefetch_blocks) {
  AllowDependentLaunch();
  PrefetchWeight<F>(w, prefetch, prefetch_blocks);
  const LeanLane<F> lane = MakeLeanLane<F>(w, x);
  Chunk<F> cur;
  if (blockIdx.x < w.n_groups) LoadLeanChunk<F>(lane, blockIdx.x, 0, static_cast<int>(w.n_steps), cur);
  WaitForPrerequisiteGrids();
  __shared__ float partial[kWarps][kRowGroup][1];
  LeanMatVecBlocks<F>(w, x, out, lane, cur, partial);
}

template <QuantFormat F>
cudaError_t LaunchLean(const QuantWeightView& w, const ActivationView& x, float* out, WeightPrefetch prefetch,
                       uint32_t prefetch_blocks, cudaStream_t stream) {
  return LaunchDependent(QuantMatVecLeanKernel<F>, dim3(GridFor<QuantMatVecLeanKernel<F>>(w.n_groups)),
                         dim3(kThreads), stream, w, x, out, prefetch, prefetch_blocks);
}

}  // namespace

cudaError_t LaunchLeanMatVec(const QuantWeightView& w, const ActivationView& x, float* out, WeightPrefetch prefetch,
                             uint32_t prefetch_blocks, cudaStream_t stream) {
  switch (w.format) {
    case QuantFormat::kTernary:
      return LaunchLean<QuantFormat::kTernary>(w, x, out, prefetch, prefetch_blocks, stream);
    case QuantFormat::kQ4_0:
      return LaunchLean<QuantFormat::kQ4_0>(w, x, out, prefetch, prefetch_blocks, stream);
    case QuantFormat::kQ4_1:
      return LaunchLean<QuantFormat::kQ4_1>(w, x, out, prefetch, prefetch_blocks, stream);
    case QuantFormat::kQ8_0:
      return LaunchLean<QuantFormat::kQ8_0>(w, x, out, prefetch, prefetch_blocks, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace bitfleet::kernels::cuda::matvec

// What the single-token mat-vec kernels share (kernels/cuda/quant_matvec.cu, the general
// kernel; quant_matvec_lean.cu and quant_matvec_tc.cu, its variants selected by
// QuantMatVecOptions::kernel): the block shape, the weight prefetch, a lane's chunk of codes, the
// step accumulation, the per-group reduction and the grid size. Device code for those files only.
#pragma once

#include <atomic>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda::matvec {

inline constexpr int kWarps = 4;
inline constexpr int kThreads = kWarps * 32;
inline constexpr int kUnroll = 4;  // steps per warp with loads in flight together
inline constexpr uint32_t kLineBytes = 128;
[[maybe_unused]] inline constexpr uint32_t kBulkPieceBytes = 32768;  // bytes per bulk prefetch (sm_90 code only)

// Asks L2 for part `part` of `parts` equal slices (in 128-byte lines) of [base, base + bytes).
// A hint: nothing waits for it, and it never touches memory past `bytes`.
__device__ __forceinline__ void PrefetchSlice(const void* base, uint64_t bytes, uint32_t part, uint32_t parts,
                                              WeightPrefetch mode) {
  const uint64_t lines = (bytes + kLineBytes - 1) / kLineBytes;
  const uint64_t per_part = (lines + parts - 1) / parts;
  const uint64_t first = per_part * part;
  const uint64_t last = min(lines, first + per_part);
  const char* p = static_cast<const char*>(base);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (mode == WeightPrefetch::kBulk) {
    if (threadIdx.x != 0 || first >= last) return;
    // Bulk sizes are multiples of 16 bytes; the slice ends at a line or at `bytes` (rounded down).
    const uint64_t end = min(bytes, last * kLineBytes) & ~uint64_t{15};
    for (uint64_t off = first * kLineBytes; off < end; off += kBulkPieceBytes) {
      const uint32_t size = static_cast<uint32_t>(min(uint64_t{kBulkPieceBytes}, end - off));
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(size) : "memory");
    }
    return;
  }
#endif
  for (uint64_t line = first + threadIdx.x; line < last; line += blockDim.x) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p + line * kLineBytes));
  }
}

template <QuantFormat F>
__device__ __forceinline__ void PrefetchWeight(const QuantWeightView& w, WeightPrefetch mode, uint32_t parts) {
  parts = min(parts, gridDim.x);  // a grid smaller than `parts` still covers the whole weight
  if (mode == WeightPrefetch::kNone || blockIdx.x >= parts) return;
  const uint64_t scales = static_cast<uint64_t>(w.n_groups) * w.n_blocks * kRowGroup;
  PrefetchSlice(w.codes, static_cast<uint64_t>(w.n_groups) * w.n_steps * kGroupStepBytes, blockIdx.x, parts, mode);
  if constexpr (F == QuantFormat::kTernary) {
    PrefetchSlice(w.scales, scales * sizeof(float), blockIdx.x, parts, mode);
  } else {
    PrefetchSlice(w.half_d, scales * sizeof(uint16_t), blockIdx.x, parts, mode);
    if constexpr (F == QuantFormat::kQ4_1) PrefetchSlice(w.half_m, scales * sizeof(uint16_t), blockIdx.x, parts, mode);
  }
}

// What a lane holds of one chunk: the codes of its steps and their scales (weights only, so a
// chunk can be loaded before the wait on the previous kernel; the post-wait critical path then
// reads only activations).
template <QuantFormat F>
struct Chunk {
  uint4 codes[kUnroll];
  float d[kUnroll];
  float m[F == QuantFormat::kQ4_1 ? kUnroll : 1];  // Q4_1's offsets
};

// Adds a lane's step product `dot` (LaneDotAt) to its sum `acc` for one token: scaled by the
// lane's block scale d (and, Q4_1, offset m times the block's activation sum sums[at]) and, Q4 /
// Q8, by the (token, block) activation step steps[at]. Ternary reads neither, so its callers may
// pass arrays a ternary view leaves null. Every mat-vec kernel goes through here, so they round
// alike.
template <QuantFormat F>
__device__ __forceinline__ void AddLaneDot(int dot, float d, float m, const int32_t* sums, const float* steps,
                                           int64_t at, float& acc) {
  if constexpr (F == QuantFormat::kTernary) {
    // A ternary lane's value is only a share of its row's dot product (LaneDotAt): add the
    // row's 4 shares as integers, so the one float product per step is of the exact dot
    // (float products of the shares could round far above the row's magnitude). Every lane
    // of the row then holds the row's sum.
    dot += __shfl_xor_sync(kFullMask, dot, 1);
    dot += __shfl_xor_sync(kFullMask, dot, 2);
    acc += d * static_cast<float>(dot);
  } else {
    // The lane's block contribution, (d dot + m sum) in activation steps, times its step.
    float v = d * static_cast<float>(dot);
    if constexpr (F == QuantFormat::kQ4_1) v += m * static_cast<float>(__ldg(sums + at));
    acc += __ldg(steps + at) * v;
  }
}

// Group g is done: sums the four quarters of each row (ternary lanes already hold their row's
// sum), then the warps, writes the group's outputs and clears `acc`. Every thread of the block
// must call it (two barriers).
template <QuantFormat F, int NT>
__device__ __forceinline__ void FinishGroup(const QuantWeightView& w, const ActivationView& x, float* out, int64_t g,
                                            int warp, int r, int quarter, float (&acc)[NT],
                                            float (&partial)[kWarps][kRowGroup][NT]) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    float v = acc[t];
    if constexpr (F != QuantFormat::kTernary) {
      v += __shfl_xor_sync(kFullMask, v, 1);
      v += __shfl_xor_sync(kFullMask, v, 2);
    }
    if (quarter == 0) partial[warp][r][t] = v;
    acc[t] = 0.0f;
  }
  __syncthreads();
  if (threadIdx.x < kRowGroup * NT) {
    const int row_in_group = threadIdx.x % kRowGroup;
    const int t = threadIdx.x / kRowGroup;
    const int64_t row = g * kRowGroup + row_in_group;
    if (row < w.rows && t < x.n_tokens) {
      float v = 0.0f;
#pragma unroll
      for (int j = 0; j < kWarps; ++j) v += partial[j][row_in_group][t];
      // Q4 / Q8 sums are already in real units (block steps).
      out[t * w.rows + row] = F == QuantFormat::kTernary ? v * (x.absmax[t] / 127.0f) : v;
    }
  }
  __syncthreads();  // `partial` is rewritten by the next group
}

// Blocks per multiprocessor the register allocation must allow (single-token decode: 5, i.e.
// at most ~96 registers; with the chunk's scales held alongside its codes the compiler otherwise
// takes ~100 and the occupancy drops to 4 blocks).
template <int NT>
inline constexpr int kMinBlocksPerSm = NT == 1 ? 5 : 4;

// Offsets from step s to step s + kWarps of the same lane (the next step of its warp).
template <QuantFormat F>
inline constexpr int kWarpCodeStride = kWarps * kGroupStepBytes;                 // bytes
template <QuantFormat F>
inline constexpr int kWarpScaleStride = kWarps * BlocksPerStep(F) * kRowGroup;   // scale entries
template <QuantFormat F>
inline constexpr int kWarpActStride = kWarps * StepElems(F);                     // activation bytes
template <QuantFormat F>
inline constexpr int kWarpSumStride = kWarps * StepElems(F) / 32;                // block sums / steps

// Runs this block's work items in order: chunks k = 0 .. chunks - 1 of each of its units (row
// groups or tiles blockIdx.x, + gridDim.x, ... below n_units), loading item i + 1 while item i is
// computed. The two chunk buffers swap roles every item instead of being copied (the copy cost
// ~20 register moves per item). load(unit, k, chunk) fills a buffer; compute(k, chunk) adds it to
// the caller's sums; finish(unit) follows a unit's last chunk (it may synchronize the block: every
// thread walks the same items). `first` holds item 0, loaded by the caller (before it waits for
// the previous kernel).
template <typename ChunkT, typename Load, typename Compute, typename Finish>
__device__ __forceinline__ void WalkChunks(int64_t n_units, int chunks, ChunkT& first, Load&& load, Compute&& compute,
                                           Finish&& finish) {
  const int64_t mine = blockIdx.x < n_units ? (n_units - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
  const int64_t items = mine * chunks;
  ChunkT other;
  int64_t unit = blockIdx.x;
  int k = 0;
  for (int64_t item = 0; item < items; item += 2) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      ChunkT& now = half == 0 ? first : other;
      ChunkT& next = half == 0 ? other : first;
      int64_t next_unit = unit;
      int next_k = k + 1;
      if (next_k == chunks) {
        next_k = 0;
        next_unit += gridDim.x;
      }
      if (item + half + 1 < items) load(next_unit, next_k, next);
      compute(k, now);
      if (next_k == 0) finish(unit);
      if (item + half + 1 == items) return;
      unit = next_unit;
      k = next_k;
    }
  }
}

// Blocks for `n_groups` row groups: every block resident at once (one wave, by the kernel's
// occupancy), with the groups spread evenly over them. The kernel is a template argument so that
// each kernel keeps its own occupancy: every mat-vec kernel has the same function type, and a
// static shared by type took the occupancy of whichever kernel launched first.
template <auto Kernel>
unsigned GridFor(int64_t n_groups) {
  static std::atomic<int> blocks_per_sm{0};  // per kernel
  int per_sm = blocks_per_sm.load(std::memory_order_relaxed);
  if (per_sm == 0) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, kThreads, 0) != cudaSuccess || per_sm <= 0) {
      cudaGetLastError();
      per_sm = 1;
    }
    blocks_per_sm.store(per_sm, std::memory_order_relaxed);
  }
  const int64_t capacity = int64_t{per_sm} * DeviceMultiProcessors();
  const int64_t per_block = (n_groups + capacity - 1) / capacity;
  return static_cast<unsigned>((n_groups + per_block - 1) / per_block);
}

// The variants' launchers: one single-token mat-vec by the format's kernel, the grid one wave.
cudaError_t LaunchLeanMatVec(const QuantWeightView& w, const ActivationView& x, float* out, WeightPrefetch prefetch,
                             uint32_t prefetch_blocks, cudaStream_t stream);
// Ternary weights only (cudaErrorInvalidValue otherwise).
cudaError_t LaunchTensorCoreMatVec(const QuantWeightView& w, const ActivationView& x, float* out,
                                   WeightPrefetch prefetch, uint32_t prefetch_blocks, cudaStream_t stream);

}  // namespace bitfleet::kernels::cuda::matvec

// Quantized mat-vec for decode (1..kMatVecMaxTokens tokens): W2A8 / W4A8 / W8A8 with dp4a.
//
// A block handles a row group (8 rows) at a time, its 4 warps splitting the steps (K); the grid
// is one wave of blocks, each walking several groups with the next chunk's codes always in flight.
// Per step a warp reads the group's 512 contiguous code bytes, 16 per lane (lane l: row l / 4,
// quarter l % 4), so every weight byte is read once with full 16-byte coalesced loads; the
// activations (a few KiB per token) come from L1. Codes enter dp4a as masked unsigned fields, the
// code offsets are removed through the activation block sums (LaneDot), and each decoded word is
// reused for every token. Lanes of one row, then warps, are summed per group.
//
// Activation steps: ternary sums are scaled by the token's absmax / 127 once per output; Q4 / Q8
// lanes hold one 32-block each per step and multiply its contribution by the (token, block) step
// (ActivationView::block_steps), so per-token and per-block activations take the same path.
//
// A decode matrix is small next to the memory system (a 2B-shaped layer's matrices are 1.7 to
// 9.4 MB: 0.4 to 2.2 us at 4 TB/s, about one DRAM round trip plus launch), so a kernel alone
// cannot approach the copy bandwidth. The kernel is therefore launched as a programmatic
// dependent launch (kernels/cuda/dependent_launch.cuh): it starts while the previous kernel runs,
// its first blocks prefetch the whole weight into L2, and only then does it wait for the
// activations the previous kernel writes. Consecutive mat-vecs thus overlap their weight streams.
#include <cooperative_groups.h>

#include "kernels/cuda/quant_matvec_parts.cuh"

namespace bitfleet::kernels::cuda {
namespace {

using namespace matvec;  // NOLINT(build/namespaces): the mat-vec's own parts

// Chunk `k` of row group `g` for this lane: steps k * kWarps * kUnroll + u * kWarps + warp
// (u < kUnroll), 16 code bytes each, and the lane's scale of each; steps past the row are not
// loaded.
template <QuantFormat F>
__device__ __forceinline__ void LoadChunk(const QuantWeightView& w, int64_t g, int64_t k, int warp, int r, int quarter,
                                          Chunk<F>& c) {
  const uint8_t* lane_codes = w.codes + CodeOffset(g, 0, r, w.n_steps) + 16 * quarter;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t s = k * (kWarps * kUnroll) + u * kWarps + warp;
    if (s >= w.n_steps) continue;
    c.codes[u] = LoadStreaming(reinterpret_cast<const uint4*>(lane_codes + s * kGroupStepBytes));
    const uint64_t si = ScaleIndex(g, s * BlocksPerStep(F) + LaneBlock(F, quarter), r, w.n_blocks);
    if constexpr (F == QuantFormat::kTernary) {
      c.d[u] = __ldg(w.scales + si);
    } else {
      c.d[u] = HalfBitsToFloat(__ldg(w.half_d + si));
      if constexpr (F == QuantFormat::kQ4_1) c.m[u] = HalfBitsToFloat(__ldg(w.half_m + si));
    }
  }
}

// Adds step `s` of the lane's row to its per-token sums: the lane's 16 code bytes of the step,
// their block's scale d and, for Q4_1, offset m.
template <QuantFormat F, int NT>
__device__ __forceinline__ void ComputeStep(const ActivationView& x, int64_t s, int quarter, const uint4& codes,
                                            float d, float m, float (&acc)[NT]) {
  const int64_t sums_stride = x.stride / 32;
  const int64_t block = s * BlocksPerStep(F) + LaneBlock(F, quarter);
  const int64_t e0 = s * StepElems(F);
  const uint32_t words[4] = {codes.x, codes.y, codes.z, codes.w};
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (NT > 1 && t >= x.n_tokens) break;
    const int dot = LaneDot<F>(words, quarter, x.q + t * x.stride + e0, x.sums + t * sums_stride + e0 / 32);
    AddLaneDot<F>(dot, d, m, x.sums, x.block_steps, t * sums_stride + block, acc[t]);
  }
}

// Adds chunk `k` of group `g` to the lane's per-token sums.
template <QuantFormat F, int NT>
__device__ __forceinline__ void ComputeChunk(const QuantWeightView& w, const ActivationView& x, int64_t k, int warp,
                                             int quarter, const Chunk<F>& c, float (&acc)[NT]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t s = k * (kWarps * kUnroll) + u * kWarps + warp;
    if (s >= w.n_steps) break;
    float m = 0.0f;
    if constexpr (F == QuantFormat::kQ4_1) m = c.m[u];
    ComputeStep<F, NT>(x, s, quarter, c.codes[u], c.d[u], m, acc);
  }
}

// The mat-vec of one weight by the whole grid, after its first chunk (`cur`, this block's first
// group) is loaded. Each block walks row groups blockIdx.x, + gridDim.x, ...; a group is
// `chunks` uniform chunks per warp (the warps split its steps). The codes of the next chunk, of
// this group or of the block's next group, are loaded while the current one is computed, so
// every warp keeps a chunk of loads in flight from its first chunk to its last. A block past the
// last group does nothing.
template <QuantFormat F, int NT>
__device__ __forceinline__ void MatVecBlocks(const QuantWeightView& w, const ActivationView& x, float* out,
                                             Chunk<F>& cur, float (&partial)[kWarps][kRowGroup][NT]) {
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int r = lane >> 2;
  const int quarter = lane & 3;
  const int64_t chunks = (w.n_steps + kWarps * kUnroll - 1) / (kWarps * kUnroll);
  const int64_t groups = blockIdx.x < w.n_groups ? (w.n_groups - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;

  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  int64_t g = blockIdx.x;
  int64_t k = 0;
  for (int64_t item = 0; item < groups * chunks; ++item) {
    int64_t next_g = g;
    int64_t next_k = k + 1;
    if (next_k == chunks) {
      next_k = 0;
      next_g = g + gridDim.x;
    }
    Chunk<F> next;
    if (next_g < w.n_groups) LoadChunk<F>(w, next_g, next_k, warp, r, quarter, next);
    ComputeChunk<F, NT>(w, x, k, warp, quarter, cur, acc);

    if (next_k == 0) FinishGroup<F, NT>(w, x, out, g, warp, r, quarter, acc, partial);
    cur = next;
    g = next_g;
    k = next_k;
  }
}

// The first chunk of this block (its first group), if the block has a group of `w`.
template <QuantFormat F>
__device__ __forceinline__ void LoadFirstChunk(const QuantWeightView& w, Chunk<F>& c) {
  const int lane = threadIdx.x & 31;
  if (blockIdx.x < w.n_groups) LoadChunk<F>(w, blockIdx.x, 0, threadIdx.x >> 5, lane >> 2, lane & 3, c);
}

// One mat-vec; the grid is one wave (GridFor). The first chunk is loaded before the wait on the
// previous kernel (weights only).
template <QuantFormat F, int NT>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<NT>)
    QuantMatVecKernel(QuantWeightView w, ActivationView x, float* out, WeightPrefetch prefetch,
                      uint32_t prefetch_blocks) {
  // Weights are never written by a kernel of the step: read them before the activations exist.
  AllowDependentLaunch();
  PrefetchWeight<F>(w, prefetch, prefetch_blocks);
  Chunk<F> cur;
  LoadFirstChunk<F>(w, cur);
  WaitForPrerequisiteGrids();
  __shared__ float partial[kWarps][kRowGroup][NT];
  MatVecBlocks<F, NT>(w, x, out, cur, partial);
}

// A chain of single-token mat-vecs in one cooperative launch, a grid-wide barrier between links
// (each link may read what the one before wrote): no kernel boundary, and while a link is
// computed the next one's weight streams into L2 and, before the barrier, every block loads its
// first chunk of it.
template <QuantFormat F>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<4>)
    QuantMatVecChainKernel(const MatVecChainLink* links, int count) {
  AllowDependentLaunch();
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  __shared__ float partial[kWarps][kRowGroup][1];
  Chunk<F> cur;
  LoadFirstChunk<F>(links[0].w, cur);
  WaitForPrerequisiteGrids();
  for (int m = 0; m < count; ++m) {
    const MatVecChainLink link = links[m];
    if (m + 1 < count) PrefetchWeight<F>(links[m + 1].w, WeightPrefetch::kBulk, gridDim.x);
    MatVecBlocks<F, 1>(link.w, link.x, link.out, cur, partial);
    if (m + 1 < count) {
      LoadFirstChunk<F>(links[m + 1].w, cur);
      grid.sync();
    }
  }
}

std::atomic<int> g_prefetch{static_cast<int>(WeightPrefetch::kBulk)};
std::atomic<int> g_prefetch_blocks{128};
std::atomic<int> g_kernel{static_cast<int>(MatVecKernel::kGeneral)};

template <QuantFormat F>
cudaError_t Launch(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  const auto prefetch = static_cast<WeightPrefetch>(g_prefetch.load(std::memory_order_relaxed));
  const auto prefetch_blocks = static_cast<uint32_t>(g_prefetch_blocks.load(std::memory_order_relaxed));
  const auto kernel = static_cast<MatVecKernel>(g_kernel.load(std::memory_order_relaxed));
  if (x.n_tokens == 1 && kernel == MatVecKernel::kTensorCore && F == QuantFormat::kTernary) {
    return LaunchTensorCoreMatVec(w, x, out, prefetch, prefetch_blocks, stream);
  }
  if (x.n_tokens == 1 && kernel == MatVecKernel::kLean) {
    return LaunchLeanMatVec(w, x, out, prefetch, prefetch_blocks, stream);
  }
  if (x.n_tokens == 1) {
    return LaunchDependent(QuantMatVecKernel<F, 1>, dim3(GridFor<QuantMatVecKernel<F, 1>>(w.n_groups)),
                           dim3(kThreads), stream, w, x, out, prefetch, prefetch_blocks);
  }
  return LaunchDependent(QuantMatVecKernel<F, kMatVecMaxTokens>,
                         dim3(GridFor<QuantMatVecKernel<F, kMatVecMaxTokens>>(w.n_groups)), dim3(kThreads), stream, w,
                         x, out, prefetch, prefetch_blocks);
}

}  // namespace

void SetQuantMatVecOptions(const QuantMatVecOptions& options) {
  g_prefetch.store(static_cast<int>(options.prefetch), std::memory_order_relaxed);
  g_prefetch_blocks.store(options.prefetch_blocks > 0 ? options.prefetch_blocks : 1, std::memory_order_relaxed);
  g_kernel.store(static_cast<int>(options.kernel), std::memory_order_relaxed);
}

QuantMatVecOptions GetQuantMatVecOptions() {
  QuantMatVecOptions options;
  options.prefetch = static_cast<WeightPrefetch>(g_prefetch.load(std::memory_order_relaxed));
  options.prefetch_blocks = g_prefetch_blocks.load(std::memory_order_relaxed);
  options.kernel = static_cast<MatVecKernel>(g_kernel.load(std::memory_order_relaxed));
  return options;
}

bool QuantMatVecLinkValid(const MatVecChainLink& link, QuantFormat format) {
  const QuantWeightView& w = link.w;
  const ActivationView& x = link.x;
  return w.format == format && x.n_tokens == 1 && x.cols == w.cols && w.n_groups > 0 && w.codes != nullptr &&
         x.stride >= w.n_steps * StepElems(w.format) && ActivationsFit(format, x) && link.out != nullptr;
}

namespace {

template <QuantFormat F>
cudaError_t LaunchChain(const MatVecChainLink* links, int count, cudaStream_t stream) {
  static std::atomic<int> blocks_per_sm{0};
  int per_sm = blocks_per_sm.load(std::memory_order_relaxed);
  if (per_sm == 0) {
    const cudaError_t e =
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, QuantMatVecChainKernel<F>, kThreads, 0);
    if (e != cudaSuccess) return e;
    if (per_sm <= 0) return cudaErrorCooperativeLaunchTooLarge;
    blocks_per_sm.store(per_sm, std::memory_order_relaxed);
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(per_sm * DeviceMultiProcessors()));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeCooperative;
  attribute[0].val.cooperative = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  const cudaError_t error = cudaLaunchKernelEx(&config, QuantMatVecChainKernel<F>, links, count);
  return error != cudaSuccess ? error : cudaGetLastError();
}

}  // namespace

cudaError_t LaunchQuantMatVecChain(QuantFormat format, const MatVecChainLink* links, int count, cudaStream_t stream) {
  if (count < 0 || (count > 0 && links == nullptr)) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  switch (format) {
    case QuantFormat::kTernary:
      return LaunchChain<QuantFormat::kTernary>(links, count, stream);
    case QuantFormat::kQ4_0:
      return LaunchChain<QuantFormat::kQ4_0>(links, count, stream);
    case QuantFormat::kQ4_1:
      return LaunchChain<QuantFormat::kQ4_1>(links, count, stream);
    case QuantFormat::kQ8_0:
      return LaunchChain<QuantFormat::kQ8_0>(links, count, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchQuantMatVec(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  if (x.n_tokens < 0 || x.n_tokens > kMatVecMaxTokens || x.cols != w.cols || w.n_groups <= 0 ||
      x.stride < w.n_steps * StepElems(w.format) || !ActivationsFit(w.format, x)) {
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

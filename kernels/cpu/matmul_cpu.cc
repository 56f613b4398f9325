// Public matmul entry points: activation quantization, row partitioning over the thread pool,
// and the per-layout kernel of the chosen variant.
#include "kernels/cpu/matmul_cpu.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/logging.h"
#include "kernels/cpu/packed_weight.h"
#include "kernels/cpu/variant_fns.h"
#include "kernels/ref/matmul_ref.h"

namespace bitfleet::kernels {
namespace cpu {
namespace {

// How a matmul's rows are split over the pool. Threads take chunks from a shared counter
// (ThreadPool::ParallelForGuided), so a thread slowed down by another process on its core takes
// fewer, instead of everyone waiting for its fixed share. A chunk is about the remaining rows /
// (2 × threads), at most kMaxChunkBytes of weights: long chunks stream better (each new chunk
// restarts the hardware prefetch ramp; measured with two threads, 32 KiB decode chunks read
// 10-20% slower than 128 KiB ones), and the shrinking tail chunks keep the threads finishing
// together (a matmul of BitNet-700M takes 25-150 µs in decode, so a few µs of idle thread at
// each of the ~170 per token matter). Batches take larger chunks: the kernels block their rows
// for L2 within a chunk, and a chunk's compute is long.
constexpr uint64_t kMaxDecodeChunkBytes = 128 * 1024;
constexpr uint64_t kMaxBatchChunkBytes = 384 * 1024;
constexpr int64_t kRowGrain = 16;

int64_t MaxChunkRows(uint64_t row_bytes, int n_tokens) {
  const uint64_t target = n_tokens == 1 ? kMaxDecodeChunkBytes : kMaxBatchChunkBytes;
  const int64_t rows = static_cast<int64_t>(target / std::max<uint64_t>(1, row_bytes));
  return std::max(kRowGrain, rows / kRowGrain * kRowGrain);
}

void FillNaN(float* out, uint64_t n) { std::fill(out, out + n, std::numeric_limits<float>::quiet_NaN()); }

ActView ViewOf(const QuantizedActivations& x) {
  ActView v;
  v.q = x.q.get();
  v.absmax = x.absmax.get();
  v.sums = x.sums.get();
  v.sums256 = x.sums256.get();
  v.block_steps = x.block_steps.get();
  v.scaled_sums = x.scaled_sums.get();
  v.stride = x.stride;
  v.n_tokens = x.n_tokens;
  if (x.tiled) {
    v.tiles = x.tiles.get();
    v.tile_sums = x.tile_sums.get();
    v.token_sums = x.token_sums.get();
    v.tile_steps = x.tile_steps.get();
  }
  return v;
}

// Grows the AMX copy of `out` to n_tokens × stride (allocates only on growth).
void ReserveTiles(QuantizedActivations* out, int n_tokens, uint64_t stride) {
  const int tiles_tokens = (n_tokens + kAmxTileTokens - 1) / kAmxTileTokens * kAmxTileTokens;
  const uint64_t need = static_cast<uint64_t>(tiles_tokens) * stride;
  if (need > out->tiles_capacity) {
    out->tiles = AllocateAligned<int8_t>(need);
    out->tile_sums = AllocateAligned<int32_t>(need / 32);
    out->tile_steps = AllocateAligned<float>(need / 32);
    out->tiles_capacity = need;
  }
  if (tiles_tokens > out->tile_token_capacity) {
    out->token_sums = AllocateAligned<int32_t>(tiles_tokens);
    out->tile_token_capacity = tiles_tokens;
  }
}

}  // namespace

uint8_t* AmxScratch(uint64_t bytes) {
  thread_local AlignedArray<uint8_t> buffer;
  thread_local uint64_t capacity = 0;
  if (bytes > capacity) {
    buffer = AllocateAligned<uint8_t>(bytes);
    capacity = bytes;
  }
  return buffer.get();
}

void ComputeAbsMaxWith(const CpuKernels& k, const float* x, int n_tokens, uint64_t cols, float* absmax) {
  for (int t = 0; t < n_tokens; ++t) absmax[t] = k.abs_max(x + t * cols, cols);
}

namespace {

// One token: q, the 32-block sums and steps (zero past cols, like the tail of q), the scaled
// sums, the 256-block sums; returns the row's absmax. Per token, `absmax` scales the whole row;
// per block, each block is scaled by its own absmax.
float QuantizeToken(const CpuKernels& k, const float* x, uint64_t cols, ActScaling scaling, float absmax,
                    uint64_t stride, int8_t* q, int32_t* sums, float* steps, float* scaled, float* s256) {
  const uint64_t n32 = stride / 32;
  const uint64_t used32 = (cols + 31) / 32;
  if (scaling == ActScaling::kPerToken) {
    k.quantize_row(x, cols, ref::ActivationInvScale(absmax), q, sums);
    std::fill(steps, steps + used32, ref::ActivationScale(absmax));
  } else {
    absmax = 0.0f;
    for (uint64_t b = 0; b < used32; ++b) {
      const uint64_t n = std::min<uint64_t>(32, cols - b * 32);
      const float a = k.abs_max(x + b * 32, n);
      steps[b] = ref::ActivationScale(a);
      k.quantize_row(x + b * 32, n, ref::ActivationInvScale(a), q + b * 32, sums + b);
      absmax = std::max(absmax, a);
    }
  }
  std::fill(q + cols, q + stride, int8_t{0});
  std::fill(sums + used32, sums + n32, 0);
  std::fill(steps + used32, steps + n32, 0.0f);
  for (uint64_t b = 0; b < n32; ++b) scaled[b] = static_cast<float>(sums[b]) * steps[b];
  for (uint64_t b = 0; b < n32 / 8; ++b) {
    int32_t sum = 0;
    for (int i = 0; i < 8; ++i) sum += sums[b * 8 + i];
    s256[b] = static_cast<float>(sum);
  }
  return absmax;
}

}  // namespace

void QuantizeActivationsWith(const CpuKernels& k, const float* x, int n_tokens, uint64_t cols, ActScaling scaling,
                             const float* absmax, QuantizedActivations* out, ThreadPool* pool) {
  // absmax may point into out->absmax (MatMul does that); Reserve keeps the values on growth.
  const bool aliased = absmax != nullptr && absmax == out->absmax.get();
  out->Reserve(n_tokens, cols);
  if (aliased) absmax = out->absmax.get();
  const uint64_t stride = QuantizedActivations::StrideFor(cols);
  out->n_tokens = n_tokens;
  out->cols = cols;
  out->stride = stride;
  out->scaling = scaling;
  const uint64_t n32 = stride / 32;
  auto quantize_rows = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float a = scaling == ActScaling::kPerToken ? absmax[t] : 0.0f;
      out->absmax[t] = QuantizeToken(k, x + t * cols, cols, scaling, a, stride, out->q.get() + t * stride,
                                     out->sums.get() + t * n32, out->block_steps.get() + t * n32,
                                     out->scaled_sums.get() + t * n32, out->sums256.get() + t * (stride / 256));
    }
  };
  const bool parallel = pool != nullptr && pool->size() > 1 && n_tokens >= kMinParallelRowTokens;
  if (parallel) {
    pool->ParallelFor(n_tokens, 1, quantize_rows);
  } else {
    quantize_rows(0, n_tokens);
  }
  out->tiled = false;
  if (k.tile_activations != nullptr && n_tokens >= kAmxMinTokens) {
    ReserveTiles(out, n_tokens, stride);
    // Token tile tt occupies 16 rows of `stride` bytes in `tiles` and 16 × n32 block sums and
    // steps.
    auto tile = [&](int64_t tt0, int64_t tt1) {
      const int64_t t0 = tt0 * kAmxTileTokens;
      const int64_t t1 = std::min<int64_t>(n_tokens, tt1 * kAmxTileTokens);
      k.tile_activations(out->q.get() + t0 * stride, out->sums.get() + t0 * n32, out->block_steps.get() + t0 * n32,
                         static_cast<int>(t1 - t0), stride, out->tiles.get() + t0 * stride,
                         out->tile_sums.get() + t0 * n32, out->token_sums.get() + t0, out->tile_steps.get() + t0 * n32);
    };
    const int64_t n_tt = (n_tokens + kAmxTileTokens - 1) / kAmxTileTokens;
    if (parallel && n_tt > 1) {
      pool->ParallelFor(n_tt, 1, tile);
    } else {
      tile(0, n_tt);
    }
    out->tiled = true;
  }
}

namespace {

// The kernel for W against int8 activations x, or null (logged, as a programming error) when W
// is not a quantized CPU layout or x does not match its columns.
QuantMatMulFn QuantKernelFor(const CpuKernels& k, const PackedWeight& w, const QuantizedActivations& x,
                             const char* caller) {
  const CpuPackedWeight* packed = AsCpuPacked(w);
  QuantMatMulFn fn = nullptr;
  if (packed != nullptr) {
    switch (packed->kind()) {
      case LayoutKind::kTernary:
        fn = k.ternary;
        break;
      case LayoutKind::kQ4_0:
        fn = k.q4_0;
        break;
      case LayoutKind::kQ4_1:
        fn = k.q4_1;
        break;
      case LayoutKind::kQ8_0:
        fn = k.q8_0;
        break;
      default:
        break;
    }
  }
  const bool scaling_ok = packed == nullptr || packed->kind() != LayoutKind::kTernary ||
                          x.scaling == ActScaling::kPerToken;
  if (!scaling_ok) {
    Logger("kernels")->error("{}: {} weight with per-block activations; ternary kernels take per-token ones "
                             "(programming error)",
                             caller, DTypeName(w.type()));
    return nullptr;
  }
  if (fn == nullptr || x.cols != w.cols() || x.stride != QuantizedActivations::StrideFor(x.cols)) {
    Logger("kernels")->error("{}: {} weight {}x{} with activations of {} cols (programming error)", caller,
                             DTypeName(w.type()), w.rows(), w.cols(), x.cols);
    return nullptr;
  }
  return fn;
}

}  // namespace

void MatMulQuantizedWith(const CpuKernels& k, const PackedWeight& w, const QuantizedActivations& x, float* out,
                         ThreadPool& pool) {
  const QuantMatMulFn fn = QuantKernelFor(k, w, x, "MatMulQuantized");
  if (fn == nullptr) {
    FillNaN(out, static_cast<uint64_t>(x.n_tokens) * w.rows());
    return;
  }
  if (x.n_tokens <= 0) return;
  const ActView act = ViewOf(x);
  const WeightView& view = AsCpuPacked(w)->view();
  pool.ParallelForGuided(static_cast<int64_t>(view.rows), kRowGrain, MaxChunkRows(view.row_bytes, x.n_tokens),
                         [&](int64_t begin, int64_t end) { fn(view, begin, end, act, out); });
}

void MatMulQuantizedGroupWith(const CpuKernels& k, std::span<const QuantMatMulJob> jobs,
                              const QuantizedActivations& x, ThreadPool& pool) {
  // The jobs' rows laid end to end: job j owns [first_row[j], first_row[j + 1]).
  constexpr size_t kMaxJobs = 8;
  QuantMatMulFn fns[kMaxJobs];
  const WeightView* views[kMaxJobs];
  int64_t first_row[kMaxJobs + 1] = {0};
  int64_t max_chunk = std::numeric_limits<int64_t>::max();
  bool ok = jobs.size() <= kMaxJobs;
  for (size_t j = 0; ok && j < jobs.size(); ++j) {
    fns[j] = QuantKernelFor(k, *jobs[j].weight, x, "MatMulQuantizedGroup");
    ok = fns[j] != nullptr;
    if (!ok) break;
    views[j] = &AsCpuPacked(*jobs[j].weight)->view();
    first_row[j + 1] = first_row[j] + static_cast<int64_t>(views[j]->rows);
    max_chunk = std::min(max_chunk, MaxChunkRows(views[j]->row_bytes, x.n_tokens));
  }
  if (!ok) {
    if (jobs.size() > kMaxJobs) Logger("kernels")->error("MatMulQuantizedGroup: {} jobs, at most {}", jobs.size(), kMaxJobs);
    for (const QuantMatMulJob& job : jobs) FillNaN(job.out, static_cast<uint64_t>(x.n_tokens) * job.weight->rows());
    return;
  }
  if (x.n_tokens <= 0 || jobs.empty()) return;
  const ActView act = ViewOf(x);
  const size_t n_jobs = jobs.size();
  // A chunk may straddle two matrices; each part runs with its own matrix's kernel. Rows of a
  // matrix are not necessarily multiples of the grain, so a part may start off-grain: the
  // kernels take any row range.
  pool.ParallelForGuided(first_row[n_jobs], kRowGrain, max_chunk, [&](int64_t begin, int64_t end) {
    size_t j = 0;
    while (first_row[j + 1] <= begin) ++j;
    for (; j < n_jobs && first_row[j] < end; ++j) {
      const int64_t b = std::max(begin, first_row[j]) - first_row[j];
      const int64_t e = std::min(end, first_row[j + 1]) - first_row[j];
      fns[j](*views[j], b, e, act, jobs[j].out);
    }
  });
}

void MatMulWith(const CpuKernels& k, const PackedWeight& w, const float* x, int n_tokens, float* out, ThreadPool& pool,
                QuantizedActivations* scratch) {
  const CpuPackedWeight* packed = AsCpuPacked(w);
  if (packed == nullptr) {
    Logger("kernels")->error("MatMul: weight was not packed for the CPU (programming error)");
    FillNaN(out, static_cast<uint64_t>(n_tokens) * w.rows());
    return;
  }
  FloatMatMulFn fn = nullptr;
  switch (packed->kind()) {
    case LayoutKind::kF32:
      fn = k.f32;
      break;
    case LayoutKind::kF16:
      fn = k.f16;
      break;
    case LayoutKind::kBF16:
      fn = k.bf16;
      break;
    default:
      break;
  }
  if (fn != nullptr) {
    const WeightView& view = packed->view();
    pool.ParallelForGuided(static_cast<int64_t>(view.rows), kRowGrain, MaxChunkRows(view.row_bytes, n_tokens),
                           [&](int64_t begin, int64_t end) { fn(view, begin, end, x, n_tokens, out); });
    return;
  }
  thread_local QuantizedActivations fallback;
  QuantizedActivations* act = scratch != nullptr ? scratch : &fallback;
  act->Reserve(n_tokens, w.cols());
  if (ActScalingFor(w.type()) == ActScaling::kPerBlock) {
    QuantizeActivationsWith(k, x, n_tokens, w.cols(), ActScaling::kPerBlock, nullptr, act, &pool);
  } else {
    // absmax goes through the activation buffer itself: QuantizeActivations copies it in place.
    ComputeAbsMaxWith(k, x, n_tokens, w.cols(), act->absmax.get());
    QuantizeActivationsWith(k, x, n_tokens, w.cols(), ActScaling::kPerToken, act->absmax.get(), act, &pool);
  }
  MatMulQuantizedWith(k, w, *act, out, pool);
}

}  // namespace cpu

void QuantizedActivations::Reserve(int max_tokens, uint64_t max_cols) {
  const uint64_t need = static_cast<uint64_t>(std::max(max_tokens, 0)) * StrideFor(max_cols);
  if (max_tokens > token_capacity) {
    // Keep the current absmax values: MatMul passes absmax from this very buffer.
    AlignedArray<float> grown = AllocateAligned<float>(max_tokens);
    if (absmax) std::copy(absmax.get(), absmax.get() + token_capacity, grown.get());
    absmax = std::move(grown);
    token_capacity = max_tokens;
  }
  if (need > capacity) {
    q = AllocateAligned<int8_t>(need);
    sums = AllocateAligned<int32_t>(need / 32);
    sums256 = AllocateAligned<float>(need / 256);
    block_steps = AllocateAligned<float>(need / 32);
    scaled_sums = AllocateAligned<float>(need / 32);
    capacity = need;
  }
  if (cpu::ActiveKernels().tile_activations != nullptr && max_tokens >= cpu::kAmxMinTokens) {
    cpu::ReserveTiles(this, max_tokens, StrideFor(max_cols));
  }
}

void* AllocateAlignedBytes(uint64_t requested, bool zero_fill) {
  constexpr uint64_t kHugePage = uint64_t{2} << 20;
  const uint64_t bytes = (requested + 63) / 64 * 64;
  const uint64_t align = bytes >= kHugePage ? kHugePage : 64;
  // glibc's aligned_alloc takes any size; C11 asks for a multiple of the alignment.
  void* p = std::aligned_alloc(align, (bytes + align - 1) / align * align);
  if (p == nullptr) std::abort();
#ifdef MADV_HUGEPAGE
  if (align == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  const uint64_t keep = zero_fill ? 0 : requested;
  std::memset(static_cast<uint8_t*>(p) + keep, 0, bytes - keep);
  return p;
}

void ComputeAbsMax(const float* x, int n_tokens, uint64_t cols, float* absmax) {
  cpu::ComputeAbsMaxWith(cpu::ActiveKernels(), x, n_tokens, cols, absmax);
}

ActScaling ActScalingFor(DType type) {
  switch (type) {
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ8_0:
      return ActScaling::kPerBlock;
    default:
      return ActScaling::kPerToken;
  }
}

void QuantizeActivations(const float* x, int n_tokens, uint64_t cols, const float* absmax, QuantizedActivations* out) {
  cpu::QuantizeActivationsWith(cpu::ActiveKernels(), x, n_tokens, cols, ActScaling::kPerToken, absmax, out, nullptr);
}

void QuantizeActivations(const float* x, int n_tokens, uint64_t cols, const float* absmax, QuantizedActivations* out,
                         ThreadPool& pool) {
  cpu::QuantizeActivationsWith(cpu::ActiveKernels(), x, n_tokens, cols, ActScaling::kPerToken, absmax, out, &pool);
}

void QuantizeActivationsPerBlock(const float* x, int n_tokens, uint64_t cols, QuantizedActivations* out) {
  cpu::QuantizeActivationsWith(cpu::ActiveKernels(), x, n_tokens, cols, ActScaling::kPerBlock, nullptr, out, nullptr);
}

void QuantizeActivationsPerBlock(const float* x, int n_tokens, uint64_t cols, QuantizedActivations* out,
                                 ThreadPool& pool) {
  cpu::QuantizeActivationsWith(cpu::ActiveKernels(), x, n_tokens, cols, ActScaling::kPerBlock, nullptr, out, &pool);
}

void MatMulQuantized(const PackedWeight& w, const QuantizedActivations& x, float* out, ThreadPool& pool) {
  cpu::MatMulQuantizedWith(cpu::ActiveKernels(), w, x, out, pool);
}

void MatMulQuantizedGroup(std::span<const QuantMatMulJob> jobs, const QuantizedActivations& x, ThreadPool& pool) {
  cpu::MatMulQuantizedGroupWith(cpu::ActiveKernels(), jobs, x, pool);
}

void MatMul(const PackedWeight& w, const float* x, int n_tokens, float* out, ThreadPool& pool,
            QuantizedActivations* scratch) {
  cpu::MatMulWith(cpu::ActiveKernels(), w, x, n_tokens, out, pool, scratch);
}

}  // namespace bitfleet::kernels

// Public matmul entry points: activation quantization, row partitioning over the thread pool,
// and the per-layout kernel of the chosen variant.
#include "kernels/cpu/matmul_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/logging.h"
#include "kernels/cpu/packed_weight.h"
#include "kernels/cpu/variant_fns.h"
#include "kernels/ref/matmul_ref.h"

namespace bitfleet::kernels {
namespace cpu {
namespace {

// Rows per work chunk of a matmul. Threads take chunks from a shared counter
// (ThreadPool::ParallelForDynamic), so a thread slowed down by another process on its core
// takes fewer, instead of everyone waiting for its fixed half. A chunk holds about
// kChunkBytes of packed weights: small enough for a few chunks per thread on the smallest
// decode matrix, large enough that the per-chunk cost (a counter increment, a restart of the
// hardware prefetch stream) stays well under 1% of the chunk's time. Batches use larger
// chunks: the kernels block their rows for L2 within a chunk, and a chunk's compute is long.
constexpr uint64_t kDecodeChunkBytes = 32 * 1024;
constexpr uint64_t kBatchChunkBytes = 192 * 1024;
constexpr int64_t kRowGrain = 16;

int64_t ChunkRows(uint64_t row_bytes, int n_tokens) {
  const uint64_t target = n_tokens == 1 ? kDecodeChunkBytes : kBatchChunkBytes;
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
  v.stride = x.stride;
  v.n_tokens = x.n_tokens;
  if (x.tiled) {
    v.tiles = x.tiles.get();
    v.tile_sums = x.tile_sums.get();
    v.token_sums = x.token_sums.get();
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

void QuantizeActivationsWith(const CpuKernels& k, const float* x, int n_tokens, uint64_t cols, const float* absmax,
                             QuantizedActivations* out) {
  // absmax may point into out->absmax (MatMul does that); Reserve keeps the values on growth.
  const bool aliased = absmax == out->absmax.get();
  out->Reserve(n_tokens, cols);
  if (aliased) absmax = out->absmax.get();
  const uint64_t stride = QuantizedActivations::StrideFor(cols);
  out->n_tokens = n_tokens;
  out->cols = cols;
  out->stride = stride;
  const uint64_t n32 = stride / 32;
  const uint64_t n256 = stride / 256;
  for (int t = 0; t < n_tokens; ++t) {
    int8_t* q = out->q.get() + t * stride;
    int32_t* sums = out->sums.get() + t * n32;
    out->absmax[t] = absmax[t];
    k.quantize_row(x + t * cols, cols, ref::ActivationInvScale(absmax[t]), q, sums);
    const uint64_t used32 = (cols + 31) / 32;
    std::fill(q + cols, q + stride, int8_t{0});
    std::fill(sums + used32, sums + n32, 0);
    float* s256 = out->sums256.get() + t * n256;
    for (uint64_t b = 0; b < n256; ++b) {
      int32_t s = 0;
      for (int i = 0; i < 8; ++i) s += sums[b * 8 + i];
      s256[b] = static_cast<float>(s);
    }
  }
  out->tiled = false;
  if (k.tile_activations != nullptr && n_tokens >= kAmxMinTokens) {
    ReserveTiles(out, n_tokens, stride);
    k.tile_activations(out->q.get(), out->sums.get(), n_tokens, stride, out->tiles.get(), out->tile_sums.get(),
                       out->token_sums.get());
    out->tiled = true;
  }
}

void MatMulQuantizedWith(const CpuKernels& k, const PackedWeight& w, const QuantizedActivations& x, float* out,
                         ThreadPool& pool) {
  const CpuPackedWeight* packed = AsCpuPacked(w);
  const uint64_t n_out = static_cast<uint64_t>(x.n_tokens) * w.rows();
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
  if (fn == nullptr || x.cols != w.cols() || x.stride != QuantizedActivations::StrideFor(x.cols)) {
    Logger("kernels")->error("MatMulQuantized: {} weight {}x{} with activations of {} cols (programming error)",
                             DTypeName(w.type()), w.rows(), w.cols(), x.cols);
    FillNaN(out, n_out);
    return;
  }
  if (x.n_tokens <= 0) return;
  const ActView act = ViewOf(x);
  const WeightView& view = packed->view();
  pool.ParallelForDynamic(static_cast<int64_t>(view.rows), ChunkRows(view.row_bytes, x.n_tokens),
                          [&](int64_t begin, int64_t end) { fn(view, begin, end, act, out); });
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
    pool.ParallelForDynamic(static_cast<int64_t>(view.rows), ChunkRows(view.row_bytes, n_tokens),
                            [&](int64_t begin, int64_t end) { fn(view, begin, end, x, n_tokens, out); });
    return;
  }
  thread_local QuantizedActivations fallback;
  QuantizedActivations* act = scratch != nullptr ? scratch : &fallback;
  act->Reserve(n_tokens, w.cols());
  // absmax goes through the activation buffer itself: QuantizeActivations copies it in place.
  ComputeAbsMaxWith(k, x, n_tokens, w.cols(), act->absmax.get());
  QuantizeActivationsWith(k, x, n_tokens, w.cols(), act->absmax.get(), act);
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
    capacity = need;
  }
  if (cpu::ActiveKernels().tile_activations != nullptr && max_tokens >= cpu::kAmxMinTokens) {
    cpu::ReserveTiles(this, max_tokens, StrideFor(max_cols));
  }
}

void ComputeAbsMax(const float* x, int n_tokens, uint64_t cols, float* absmax) {
  cpu::ComputeAbsMaxWith(cpu::ActiveKernels(), x, n_tokens, cols, absmax);
}

void QuantizeActivations(const float* x, int n_tokens, uint64_t cols, const float* absmax, QuantizedActivations* out) {
  cpu::QuantizeActivationsWith(cpu::ActiveKernels(), x, n_tokens, cols, absmax, out);
}

void MatMulQuantized(const PackedWeight& w, const QuantizedActivations& x, float* out, ThreadPool& pool) {
  cpu::MatMulQuantizedWith(cpu::ActiveKernels(), w, x, out, pool);
}

void MatMul(const PackedWeight& w, const float* x, int n_tokens, float* out, ThreadPool& pool,
            QuantizedActivations* scratch) {
  cpu::MatMulWith(cpu::ActiveKernels(), w, x, n_tokens, out, pool, scratch);
}

}  // namespace bitfleet::kernels

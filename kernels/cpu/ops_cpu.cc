// Public ops of kernels/ops.h on top of the variant helpers (kernels/cpu/kernel_table.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/cpu/matmul_cpu.h"
#include "kernels/ref/matmul_ref.h"
#include "kernels/ref/ops_ref.h"

namespace bitfleet::kernels {
namespace cpu {
namespace {

// Stack buffers of the attention kernel: accumulators (query heads × head_dim) and scores
// (query heads × keys of one chunk).
constexpr int kAttnFloats = 4096;
constexpr int kMaxHeadsPerUnit = 64;

// One unit of attention work: query token `t`, KV heads [g0, g1), and of each KV head's
// query group the heads [i0, i1) (the whole group unless the group had to be split to give
// every thread work).
struct AttnUnit {
  int t;
  int g0, g1;
  int i0, i1;
};

// Pulls the K and V rows of positions [j0, j1), KV heads [g0, g1), towards L1. The heads of one
// position are contiguous, but the positions of a block are n_kv_heads * head_dim apart and the
// blocks anywhere: too irregular for the hardware prefetchers, so without this every K/V row
// is a full memory latency (measured: BitNet-700M decode attention 4x slower).
void PrefetchKv(const PagedKv& kv, const int32_t* block_table, int j0, int j1, int g0, int g1) {
  const uint64_t elem_bytes = kv.int8() ? 1 : sizeof(uint16_t);
  const uint64_t bytes = static_cast<uint64_t>(g1 - g0) * kv.head_dim * elem_bytes;
  const char* k_base = kv.int8() ? reinterpret_cast<const char*>(kv.k8) : reinterpret_cast<const char*>(kv.k);
  const char* v_base = kv.int8() ? reinterpret_cast<const char*>(kv.v8) : reinterpret_cast<const char*>(kv.v);
  for (int j = j0; j < j1; ++j) {
    const uint64_t off = ref::PagedKvOffset(kv, block_table, j, g0);
    const char* k = k_base + off * elem_bytes;
    const char* v = v_base + off * elem_bytes;
    for (uint64_t b = 0; b < bytes; b += 64) {
      __builtin_prefetch(k + b, 0, 3);
      __builtin_prefetch(v + b, 0, 3);
    }
    if (kv.int8()) {
      const uint64_t step = off / KvInt8Group(kv.head_dim);
      __builtin_prefetch(kv.k_steps + step, 0, 3);
      __builtin_prefetch(kv.v_steps + step, 0, 3);
    }
  }
}

// Halves of one K (or V) run that an int8 cache dequantizes into a buffer: runs of such a cache
// hold at most kKvRunHalves / head_dim keys.
constexpr int kKvRunHalves = 4096;

// Keys [j0, j0 + n) of KV head g, all in one paged block, as the f16 kernels read them.
struct KvRows {
  const uint16_t* k;
  const uint16_t* v;
  int64_t stride;  // elements from one key's row to the next
};

// Elements [off, off + n) of an int8 cache's K and V pools as f16 into k_out and v_out; off and
// n are whole groups (KvInt8Group).
void DequantKv(const CpuKernels& k, const PagedKv& kv, uint64_t off, int64_t n, uint16_t* k_out, uint16_t* v_out) {
  const int group = KvInt8Group(kv.head_dim);
  k.dequant_i8_f16(kv.k8 + off, kv.k_steps + off / group, n, group, k_out);
  k.dequant_i8_f16(kv.v8 + off, kv.v_steps + off / group, n, group, v_out);
}

// An f16 cache's rows are read in place; an int8 cache's are dequantized into buf (2 ×
// kKvRunHalves halves; n * head_dim <= kKvRunHalves).
KvRows ReadKvRows(const CpuKernels& k, const PagedKv& kv, const int32_t* block_table, int j0, int n, int g,
                  uint16_t* buf) {
  const uint64_t off = ref::PagedKvOffset(kv, block_table, j0, g);
  const int64_t stride = int64_t{kv.n_kv_heads} * kv.head_dim;
  if (!kv.int8()) return {kv.k + off, kv.v + off, stride};
  const int hd = kv.head_dim;
  uint16_t* kb = buf;
  uint16_t* vb = buf + kKvRunHalves;
  for (int i = 0; i < n; ++i) {
    DequantKv(k, kv, off + static_cast<uint64_t>(i) * stride, hd, kb + int64_t{i} * hd, vb + int64_t{i} * hd);
  }
  return {kb, vb, hd};
}

// Whether the variant reads an int8 cache's rows in place (qk_i8 / pv_i8) instead of through a
// dequantized buffer.
bool Int8InPlace(const CpuKernels& k, const PagedKv& kv) { return kv.int8() && k.qk_i8 != nullptr; }

// The most keys of one run AttendRange may read at once from `kv`: a paged block's, or what the
// dequantization buffer holds.
int KvRunCap(const CpuKernels& k, const PagedKv& kv) {
  return kv.int8() && !Int8InPlace(k, kv) ? std::max(1, kKvRunHalves / kv.head_dim) : kv.block_size;
}

// Keys [j0, j0 + n) of KV head g (one paged block's run) for the per-token path: the scores of a
// query group against them and the probabilities' sum of their values, on the rows in place
// (f16, or int8 with qk_i8 / pv_i8) or on an int8 run dequantized into buf (2 × kKvRunHalves
// halves; n * head_dim <= kKvRunHalves). Both give the same bits.
class KvRun {
 public:
  KvRun(const CpuKernels& k, const PagedKv& kv, const int32_t* block_table, int j0, int n, int g, uint16_t* buf)
      : k_(k), kv_(kv), n_(n), off_(ref::PagedKvOffset(kv, block_table, j0, g)) {
    if (!Int8InPlace(k, kv)) rows_ = ReadKvRows(k, kv, block_table, j0, n, g, buf);
  }

  // s[i * n + j] = scale * q_i · K_j for the nq heads of q (nq × head_dim).
  void Scores(const float* q, int nq, float scale, float* s) const {
    const int hd = kv_.head_dim;
    if (!Int8InPlace(k_, kv_)) return k_.qk_f16(q, nq, hd, rows_.k, rows_.stride, n_, scale, s);
    const int group = KvInt8Group(hd);
    k_.qk_i8(q, nq, hd, kv_.k8 + off_, kv_.k_steps + off_ / group, Stride(), group, n_, scale, s);
  }

  // acc[i * head_dim + d] += Σ_j p[i * n + j] · V_j[d].
  void AddValues(const float* p, int nq, float* acc) const {
    const int hd = kv_.head_dim;
    if (!Int8InPlace(k_, kv_)) return k_.pv_f16(p, nq, n_, rows_.v, rows_.stride, hd, acc);
    const int group = KvInt8Group(hd);
    k_.pv_i8(p, nq, n_, kv_.v8 + off_, kv_.v_steps + off_ / group, Stride(), group, hd, acc);
  }

 private:
  int64_t Stride() const { return int64_t{kv_.n_kv_heads} * kv_.head_dim; }

  const CpuKernels& k_;
  const PagedKv& kv_;
  int n_;
  uint64_t off_;
  KvRows rows_{};
};

// Running online-softmax state of the heads of one unit: per head the max score m, the sum
// of exp(score - m), and the accumulator Σ exp(score - m) · V (head_dim floats).
struct AttnState {
  float* acc;
  float* m;
  float* l;
  void Reset(int n_heads, int hd) {
    std::fill(acc, acc + n_heads * hd, 0.0f);
    std::fill(m, m + n_heads, -INFINITY);
    std::fill(l, l + n_heads, 0.0f);
  }
};

// Folds positions [j_begin, j_end) into the unit's state (q: the token's n_heads × head_dim
// rows). One paged block's run of keys at a time for all the unit's heads, so every K and V
// row is converted once for its query group and no score buffer of the context length is
// needed; accumulators are rescaled when a head's max grows. The next run's rows are
// prefetched while this one is computed.
void AttendRange(const CpuKernels& k, const float* q, const AttnUnit& u, int group, const PagedKv& kv,
                 const int32_t* block_table, int j_begin, int j_end, float scale, AttnState st) {
  const int hd = kv.head_dim;
  const int nq = u.i1 - u.i0;
  float s[kAttnFloats];
  uint16_t kv_buf[2 * kKvRunHalves];  // int8 caches without qk_i8: the run dequantized
  const int chunk_cap = std::min(std::max(1, kAttnFloats / nq), KvRunCap(k, kv));
  auto chunk_end = [&](int j0) {
    return j0 + std::min({kv.block_size - j0 % kv.block_size, j_end - j0, chunk_cap});
  };
  // A unit of every KV head reads whole rows, consecutive within a block: the hardware
  // prefetchers follow that, so only the first row of the next run (another block, anywhere)
  // is requested ahead.
  const bool whole_rows = u.g0 == 0 && u.g1 == kv.n_kv_heads;
  auto prefetch_run = [&](int j0) {
    PrefetchKv(kv, block_table, j0, whole_rows ? j0 + 1 : chunk_end(j0), u.g0, u.g1);
  };
  if (j_begin < j_end) prefetch_run(j_begin);
  for (int j0 = j_begin; j0 < j_end;) {
    const int j1 = chunk_end(j0);
    const int n = j1 - j0;
    if (j1 < j_end) prefetch_run(j1);
    for (int g = u.g0; g < u.g1; ++g) {
      const int h = (g - u.g0) * nq;  // first of this KV head's heads within the unit
      const float* qg = q + (int64_t{g} * group + u.i0) * hd;
      const KvRun run(k, kv, block_table, j0, n, g, kv_buf);
      run.Scores(qg, nq, scale, s);
      for (int i = 0; i < nq; ++i) {
        float* si = s + i * n;
        const float chunk_max = *std::max_element(si, si + n);
        if (chunk_max > st.m[h + i]) {
          const float f = std::exp(st.m[h + i] - chunk_max);  // 0 on the first chunk
          st.l[h + i] *= f;
          for (int d = 0; d < hd; ++d) st.acc[(h + i) * hd + d] *= f;
          st.m[h + i] = chunk_max;
        }
        st.l[h + i] += k.exp_shift_sum(si, n, st.m[h + i]);
      }
      run.AddValues(s, nq, st.acc + h * hd);
    }
    j0 = j1;
  }
}

// Attention of one unit over positions 0..n_ctx-1, normalized into out (the token's
// n_heads × head_dim rows).
void AttendUnit(const CpuKernels& k, const float* q, const AttnUnit& u, int group, const PagedKv& kv,
                const int32_t* block_table, int n_ctx, float scale, float* out) {
  const int hd = kv.head_dim;
  const int nq = u.i1 - u.i0;
  const int n_heads_unit = (u.g1 - u.g0) * nq;
  float acc[kAttnFloats];
  float m[kMaxHeadsPerUnit];
  float l[kMaxHeadsPerUnit];
  AttnState st{acc, m, l};
  st.Reset(n_heads_unit, hd);
  AttendRange(k, q, u, group, kv, block_table, 0, n_ctx, scale, st);
  for (int g = u.g0; g < u.g1; ++g) {
    for (int i = 0; i < nq; ++i) {
      const int h = (g - u.g0) * nq + i;
      const float inv = 1.0f / l[h];
      float* o = out + (int64_t{g} * group + u.i0 + i) * hd;
      for (int d = 0; d < hd; ++d) o[d] = acc[h * hd + d] * inv;
    }
  }
}

// Splits of one decode token's context (split-K, "flash decoding"): at most this many, each at
// least kMinSplitKeys positions.
constexpr int kMaxSplits = 8;
constexpr int kMinSplitKeys = 32;

// Decode attention of one token with the context split over the threads: split s covers
// every head over positions [s·n_ctx/splits, (s+1)·n_ctx/splits) and keeps its own softmax
// state; the states are merged at the end (max of the maxima, sums and accumulators rescaled
// to it). Each split then reads whole K/V rows of consecutive positions, a plain forward
// stream the hardware prefetchers follow, instead of a strip of every row per head range
// (measured: BitNet-700M shapes, 160 positions cold, two threads 70 µs → see docs/kernels.md).
void AttendSplitContext(const CpuKernels& k, const float* q, int n_heads, const PagedKv& kv,
                        const int32_t* block_table, int n_ctx, float scale, float* out, int splits,
                        ThreadPool& pool) {
  const int hd = kv.head_dim;
  const int group = n_heads / kv.n_kv_heads;
  const AttnUnit all{0, 0, kv.n_kv_heads, 0, group};
  // Per split: accumulators, maxima, sums. Owned by the calling thread, sized once.
  struct Partial {
    float acc[kAttnFloats];
    float m[kMaxHeadsPerUnit];
    float l[kMaxHeadsPerUnit];
  };
  thread_local std::unique_ptr<Partial[]> partials;
  if (!partials) partials.reset(new Partial[kMaxSplits]);
  Partial* p = partials.get();
  pool.ParallelForDynamic(splits, 1, [&](int64_t begin, int64_t end) {
    for (int64_t sp = begin; sp < end; ++sp) {
      const int j0 = static_cast<int>(int64_t{n_ctx} * sp / splits);
      const int j1 = static_cast<int>(int64_t{n_ctx} * (sp + 1) / splits);
      AttnState st{p[sp].acc, p[sp].m, p[sp].l};
      st.Reset(n_heads, hd);
      AttendRange(k, q, all, group, kv, block_table, j0, j1, scale, st);
    }
  });
  for (int h = 0; h < n_heads; ++h) {
    float m = -INFINITY;
    for (int sp = 0; sp < splits; ++sp) m = std::max(m, p[sp].m[h]);
    float l = 0.0f;
    float* o = out + int64_t{h} * hd;
    std::fill(o, o + hd, 0.0f);
    for (int sp = 0; sp < splits; ++sp) {
      if (p[sp].l[h] == 0.0f) continue;  // an empty split (never with kMinSplitKeys) adds nothing
      const float f = std::exp(p[sp].m[h] - m);
      l += p[sp].l[h] * f;
      const float* a = p[sp].acc + h * hd;
      for (int d = 0; d < hd; ++d) o[d] += a[d] * f;
    }
    const float inv = 1.0f / l;
    for (int d = 0; d < hd; ++d) o[d] *= inv;
  }
}

}  // namespace

void RmsNormWith(const CpuKernels& k, const float* x, const float* weight, int n_tokens, int dim, float eps, float* y) {
  for (int t = 0; t < n_tokens; ++t) {
    const int64_t off = int64_t{t} * dim;
    const float mean_sq = k.sum_squares(x + off, dim) / static_cast<float>(dim);
    k.scale_mul(x + off, weight, 1.0f / std::sqrt(mean_sq + eps), dim, y + off);
  }
}

void SumSquaresWith(const CpuKernels& k, const float* x, int n_tokens, int dim, float* sum_sq) {
  for (int t = 0; t < n_tokens; ++t) sum_sq[t] = k.sum_squares(x + int64_t{t} * dim, dim);
}

void RmsNormWithSumSquaresWith(const CpuKernels& k, const float* x, const float* weight, int n_tokens, int dim,
                               const float* sum_sq, int full_dim, float eps, float* y) {
  for (int t = 0; t < n_tokens; ++t) {
    const int64_t off = int64_t{t} * dim;
    const float mean_sq = sum_sq[t] / static_cast<float>(full_dim);
    k.scale_mul(x + off, weight, 1.0f / std::sqrt(mean_sq + eps), dim, y + off);
  }
}

void SoftmaxWith(const CpuKernels& k, float* x, int n) {
  if (n <= 0) return;
  const float m = *std::max_element(x, x + n);
  const float inv_sum = 1.0f / k.exp_shift_sum(x, n, m);
  for (int i = 0; i < n; ++i) x[i] *= inv_sum;
}

void SiluMulWith(const CpuKernels& k, const float* gate, const float* up, int64_t n, float* out) {
  k.silu_mul(gate, up, n, out);
}

void Relu2MulWith(const CpuKernels& k, const float* gate, const float* up, int64_t n, float* out) {
  k.relu2_mul(gate, up, n, out);
}

namespace {

// One group of an int8 KV row, as ref::QuantizeKvGroupRef stores it.
void QuantizeKvGroup(const CpuKernels& k, const float* x, int n, int8_t* q, float* step) {
  bool finite = true;
  for (int i = 0; i < n; ++i) finite &= std::fabs(x[i]) <= std::numeric_limits<float>::max();  // false for NaN
  if (!finite) {
    std::fill(q, q + n, int8_t{0});
    *step = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  const float a = k.abs_max(x, static_cast<uint64_t>(n));
  *step = ref::ActivationScale(a);
  const float inv = ref::ActivationInvScale(a);
  int32_t sums[8];  // quantize_row's block sums, unused here
  for (int i = 0; i < n; i += 256) {
    k.quantize_row(x + i, static_cast<uint64_t>(std::min(256, n - i)), inv, q + i, sums);
  }
}

}  // namespace

void WriteKvWith(const CpuKernels& k, const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens,
                 const float* kk, const float* v) {
  const int64_t row = int64_t{kv.n_kv_heads} * kv.head_dim;
  const int group = KvInt8Group(kv.head_dim);
  for (int t = 0; t < n_tokens; ++t) {
    for (int g = 0; g < kv.n_kv_heads; ++g) {
      const uint64_t off = ref::PagedKvOffset(kv, block_table, pos0 + t, g);
      const int64_t src = t * row + int64_t{g} * kv.head_dim;
      if (kv.int8()) {
        for (int d = 0; d < kv.head_dim; d += group) {
          QuantizeKvGroup(k, kk + src + d, group, kv.k8 + off + d, kv.k_steps + (off + d) / group);
          QuantizeKvGroup(k, v + src + d, group, kv.v8 + off + d, kv.v_steps + (off + d) / group);
        }
        continue;
      }
      k.f32_to_f16(kk + src, kv.head_dim, kv.k + off);
      k.f32_to_f16(v + src, kv.head_dim, kv.v + off);
    }
  }
}

// Prefill through k.attend_run: units of (a tile of consecutive query tokens, one KV head) whose
// rows (tile tokens × the KV head's query heads) fold every run of cached positions together,
// so each K/V row is converted once per tile instead of once per token. Taken from
// kMinTileTokens query tokens; a tile holds at most kMaxTileRows rows.
constexpr int kMinTileTokens = 4;
constexpr int kMaxTileRows = 32;
constexpr int kMaxTileHeadDim = 256;

// One thread's state of a tile unit: up to kMaxTileRows query rows with their online-softmax
// state and causal limits.
struct TileState {
  float q[kMaxTileRows * kMaxTileHeadDim];
  float acc[kMaxTileRows * kMaxTileHeadDim];
  float m[kMaxTileRows];
  float l[kMaxTileRows];
  int32_t limit[kMaxTileRows];
};

// This thread's TileState (allocated on its first use).
TileState& ThreadTileState() {
  thread_local std::unique_ptr<TileState> state;
  if (!state) state = std::make_unique<TileState>();
  return *state;
}

// Folds positions [0, n_keys) of KV head g into every row of st (rows query rows, all allowed
// those positions by st.limit), one paged-block run of at most 16 keys at a time, the rows read
// in place (an int8 cache's through attend_run_i8).
void AttendTileRuns(const CpuKernels& k, const PagedKv& kv, const int32_t* block_table, int g, int rows, int n_keys,
                    float scale, TileState& st) {
  const int group = KvInt8Group(kv.head_dim);
  const int64_t stride = int64_t{kv.n_kv_heads} * kv.head_dim;
  for (int j0 = 0; j0 < n_keys;) {
    const int n = std::min({kv.block_size - j0 % kv.block_size, n_keys - j0, 16});
    const uint64_t off = ref::PagedKvOffset(kv, block_table, j0, g);
    if (kv.int8()) {
      k.attend_run_i8(st.q, rows, kv.head_dim, st.limit, kv.k8 + off, kv.k_steps + off / group, kv.v8 + off,
                      kv.v_steps + off / group, stride, group, j0, n, scale, st.m, st.l, st.acc);
    } else {
      k.attend_run(st.q, rows, kv.head_dim, st.limit, kv.k + off, kv.v + off, stride, j0, n, scale, st.m, st.l,
                   st.acc);
    }
    j0 += n;
  }
}

// Whether prefill (or shared-prefix decode) takes the tiles: the variant has the run kernel for
// the cache's element type, and the shape fits a tile.
bool TilesApply(const CpuKernels& k, const PagedKv& kv, int n_tokens, int group) {
  const int hd = kv.head_dim;
  const bool has_run = kv.int8() ? k.attend_run_i8 != nullptr : k.attend_run != nullptr;
  return has_run && n_tokens >= kMinTileTokens && group <= kMaxTileRows && hd % 16 == 0 && hd <= kMaxTileHeadDim;
}

void AttendTiles(const CpuKernels& k, const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                 const int32_t* block_table, int pos0, float scale, float* out, ThreadPool* pool) {
  const int hd = kv.head_dim;
  const int n_kv = kv.n_kv_heads;
  const int group = n_heads / n_kv;
  const int tile_tokens = std::max(1, kMaxTileRows / group);
  const int n_tiles = (n_tokens + tile_tokens - 1) / tile_tokens;
  auto run_units = [&](int64_t begin, int64_t end) {
    TileState& st = ThreadTileState();
    for (int64_t u = begin; u < end; ++u) {
      // The last tiles (longest contexts) first, so the threads finish together.
      const int tile = n_tiles - 1 - static_cast<int>(u / n_kv);
      const int g = static_cast<int>(u % n_kv);
      const int t0 = tile * tile_tokens;
      const int t1 = std::min(n_tokens, t0 + tile_tokens);
      const int rows = (t1 - t0) * group;
      for (int t = t0; t < t1; ++t) {
        for (int i = 0; i < group; ++i) {
          const int r = (t - t0) * group + i;
          const float* src = q + (int64_t{t} * n_heads + int64_t{g} * group + i) * hd;
          std::copy(src, src + hd, st.q + r * hd);
          std::fill(st.acc + r * hd, st.acc + (r + 1) * hd, 0.0f);
          st.m[r] = -INFINITY;
          st.l[r] = 0.0f;
          st.limit[r] = pos0 + t + 1;
        }
      }
      AttendTileRuns(k, kv, block_table, g, rows, pos0 + t1, scale, st);
      for (int t = t0; t < t1; ++t) {
        for (int i = 0; i < group; ++i) {
          const int r = (t - t0) * group + i;
          const float inv = 1.0f / st.l[r];
          float* o = out + (int64_t{t} * n_heads + int64_t{g} * group + i) * hd;
          for (int d = 0; d < hd; ++d) o[d] = st.acc[r * hd + d] * inv;
        }
      }
    }
  };
  const int64_t units = int64_t{n_tiles} * n_kv;
  if (pool == nullptr || pool->size() == 1 || units == 1) {
    run_units(0, units);
  } else {
    pool->ParallelForDynamic(units, 1, run_units);
  }
}

void AttentionPagedWith(const CpuKernels& k, const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                        const int32_t* block_table, int pos0, float scale, float* out, float* scratch,
                        ThreadPool* pool) {
  (void)scratch;  // the online-softmax kernel needs none; kept in the API for compatibility
  const int hd = kv.head_dim;
  if (hd > kAttnFloats || n_tokens <= 0) {
    if (n_tokens > 0) ref::AttentionPagedRef(q, n_tokens, n_heads, kv, block_table, pos0, scale, out);
    return;
  }
  const int n_kv = kv.n_kv_heads;
  const int group = n_heads / n_kv;
  const int threads = pool != nullptr ? pool->size() : 1;
  auto fits = [&](int heads) { return heads <= kMaxHeadsPerUnit && heads * hd <= kAttnFloats; };
  const int n_ctx = pos0 + 1;
  if (n_tokens == 1 && pool != nullptr && threads > 1 && fits(n_heads) && n_ctx >= 2 * kMinSplitKeys) {
    const int splits = std::min({kMaxSplits, 2 * threads, n_ctx / kMinSplitKeys});
    AttendSplitContext(k, q, n_heads, kv, block_table, n_ctx, scale, out, splits, *pool);
    return;
  }
  if (TilesApply(k, kv, n_tokens, group)) {
    AttendTiles(k, q, n_tokens, n_heads, kv, block_table, pos0, scale, out, pool);
    return;
  }
  // Aim for two units per thread (so work sharing can even out a slow thread), each covering
  // as many KV heads as the buffers hold: a unit reads its heads' rows contiguously.
  const int64_t want_units = threads == 1 ? 1 : 2 * int64_t{threads};
  // Query heads per unit and KV head: the whole group (shares K/V conversion) unless even one
  // KV head per unit leaves threads idle or overflows the buffers; always a divisor of group.
  int per_group = group;
  while (per_group > 1 && (!fits(per_group) || int64_t{n_tokens} * n_kv * (group / per_group) < threads)) {
    int next = per_group - 1;
    while (group % next != 0) --next;
    per_group = next;
  }
  int kv_per_unit = 1;
  if (per_group == group) {
    const int64_t ranges_wanted = (want_units + n_tokens - 1) / n_tokens;  // per token
    kv_per_unit = static_cast<int>(std::max<int64_t>(1, n_kv / std::max<int64_t>(1, ranges_wanted)));
    while (kv_per_unit > 1 && !fits(kv_per_unit * group)) --kv_per_unit;
  }
  const int ranges = (n_kv + kv_per_unit - 1) / kv_per_unit;
  const int splits = group / per_group;
  const int units_per_token = ranges * splits;
  const int64_t units = int64_t{n_tokens} * units_per_token;
  // Units in order, taken one at a time by whichever thread is free (later tokens attend to
  // more keys, so fixed shares would leave one thread with most of a prefill's work).
  auto run_units = [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int t = static_cast<int>(u / units_per_token);
      const int r = static_cast<int>(u % units_per_token);
      AttnUnit unit;
      unit.t = t;
      unit.g0 = (r / splits) * kv_per_unit;
      unit.g1 = std::min(n_kv, unit.g0 + kv_per_unit);
      unit.i0 = (r % splits) * per_group;
      unit.i1 = unit.i0 + per_group;
      const int64_t off = int64_t{t} * n_heads * hd;
      AttendUnit(k, q + off, unit, group, kv, block_table, pos0 + t + 1, scale, out + off);
    }
  };
  if (pool == nullptr || threads == 1 || units == 1) {
    run_units(0, units);
  } else {
    pool->ParallelForDynamic(units, 1, run_units);
  }
}

void AttentionSharedPrefixWith(const CpuKernels& k, const float* const* q, int n_seqs, int n_heads, const PagedKv& kv,
                               const int32_t* const* tables, const int32_t* pos, int shared_positions, float scale,
                               float* const* out, ThreadPool* pool) {
  const int hd = kv.head_dim;
  const int n_kv = kv.n_kv_heads;
  const int group = n_heads / n_kv;
  int shared = shared_positions;
  for (int i = 0; i < n_seqs; ++i) shared = std::min(shared, pos[i] + 1);
  if (n_seqs < 2 || shared < 1 || !TilesApply(k, kv, kMinTileTokens, group) || group * hd > kAttnFloats) {
    for (int i = 0; i < n_seqs; ++i) {
      AttentionPagedWith(k, q[i], 1, n_heads, kv, tables[i], pos[i], scale, out[i], nullptr, pool);
    }
    return;
  }
  // Every (sequence, head)'s online-softmax state after the shared positions: m, l, acc.
  thread_local std::vector<float> state;
  const size_t n_rows_all = static_cast<size_t>(n_seqs) * n_heads;
  if (state.size() < n_rows_all * (hd + 2)) state.resize(n_rows_all * (hd + 2));
  float* m_all = state.data();
  float* l_all = m_all + n_rows_all;
  float* acc_all = l_all + n_rows_all;

  // 1. The shared positions: units of (up to kMaxTileRows / group sequences, one KV head) whose
  // query rows fold every run together, so each run's K/V rows are converted once per unit
  // instead of once per sequence.
  const int seqs_per_tile = std::max(1, kMaxTileRows / group);
  const int n_tiles = (n_seqs + seqs_per_tile - 1) / seqs_per_tile;
  auto shared_units = [&](int64_t begin, int64_t end) {
    TileState& st = ThreadTileState();
    for (int64_t u = begin; u < end; ++u) {
      const int s0 = static_cast<int>(u / n_kv) * seqs_per_tile;
      const int s1 = std::min(n_seqs, s0 + seqs_per_tile);
      const int g = static_cast<int>(u % n_kv);
      const int rows = (s1 - s0) * group;
      for (int r = 0; r < rows; ++r) {
        const float* src = q[s0 + r / group] + (int64_t{g} * group + r % group) * hd;
        std::copy(src, src + hd, st.q + r * hd);
        std::fill(st.acc + r * hd, st.acc + (r + 1) * hd, 0.0f);
        st.m[r] = -INFINITY;
        st.l[r] = 0.0f;
        st.limit[r] = shared;
      }
      AttendTileRuns(k, kv, tables[s0], g, rows, shared, scale, st);
      for (int r = 0; r < rows; ++r) {
        const size_t row = static_cast<size_t>(s0 + r / group) * n_heads + g * group + r % group;
        m_all[row] = st.m[r];
        l_all[row] = st.l[r];
        std::copy(st.acc + r * hd, st.acc + (r + 1) * hd, acc_all + row * hd);
      }
    }
  };
  // 2. Each sequence's own positions, continuing from that state, then the normalization.
  auto own_units = [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int s = static_cast<int>(u / n_kv);
      const int g = static_cast<int>(u % n_kv);
      const size_t row0 = static_cast<size_t>(s) * n_heads + g * group;
      const AttnState st{acc_all + row0 * hd, m_all + row0, l_all + row0};
      AttendRange(k, q[s], AttnUnit{0, g, g + 1, 0, group}, group, kv, tables[s], shared, pos[s] + 1, scale, st);
      for (int i = 0; i < group; ++i) {
        const float inv = 1.0f / st.l[i];
        float* o = out[s] + (int64_t{g} * group + i) * hd;
        for (int d = 0; d < hd; ++d) o[d] = st.acc[i * hd + d] * inv;
      }
    }
  };
  const int64_t n_shared_units = int64_t{n_tiles} * n_kv;
  const int64_t n_own_units = int64_t{n_seqs} * n_kv;
  if (pool == nullptr || pool->size() == 1) {
    shared_units(0, n_shared_units);
    own_units(0, n_own_units);
  } else {
    pool->ParallelForDynamic(n_shared_units, 1, shared_units);
    pool->ParallelForDynamic(n_own_units, 1, own_units);
  }
}

}  // namespace cpu

void RmsNorm(const float* x, const float* weight, int n_tokens, int dim, float eps, float* y) {
  cpu::RmsNormWith(cpu::ActiveKernels(), x, weight, n_tokens, dim, eps, y);
}

void SumSquares(const float* x, int n_tokens, int dim, float* sum_sq) {
  cpu::SumSquaresWith(cpu::ActiveKernels(), x, n_tokens, dim, sum_sq);
}

void RmsNormWithSumSquares(const float* x, const float* weight, int n_tokens, int dim, const float* sum_sq,
                           int full_dim, float eps, float* y) {
  cpu::RmsNormWithSumSquaresWith(cpu::ActiveKernels(), x, weight, n_tokens, dim, sum_sq, full_dim, eps, y);
}

namespace {

// cos/sin of every (token, pair) angle of the last Rope call on this thread. A step rotates Q
// and K of every layer at the same positions (48 calls per step for a 24-layer model), and the
// angles are computed in double (pow, sin, cos: ~100 ns per pair), so they are computed once
// per step and reused. Grows on demand (allocates while warming up only).
struct RopeAngles {
  float freq_base = 0.0f;
  int rot_dim = -1;
  int n_tokens = 0;
  int token_capacity = 0;
  int pair_capacity = 0;
  AlignedArray<int32_t> positions;
  AlignedArray<float> cos_t;  // n_tokens × rot_dim / 2
  AlignedArray<float> sin_t;

  void Update(const int32_t* pos, int n, int rot, float base) {
    const int half = rot / 2;
    if (base == freq_base && rot == rot_dim && n == n_tokens && std::equal(pos, pos + n, positions.get())) return;
    if (n > token_capacity) {
      positions = AllocateAligned<int32_t>(n);
      token_capacity = n;
    }
    if (int64_t{n} * half > pair_capacity) {
      pair_capacity = n * half;
      cos_t = AllocateAligned<float>(pair_capacity);
      sin_t = AllocateAligned<float>(pair_capacity);
    }
    for (int t = 0; t < n; ++t) {
      positions[t] = pos[t];
      for (int i = 0; i < half; ++i) {
        const double theta = pos[t] * std::pow(static_cast<double>(base), -2.0 * i / static_cast<double>(rot));
        cos_t[t * half + i] = static_cast<float>(std::cos(theta));
        sin_t[t * half + i] = static_cast<float>(std::sin(theta));
      }
    }
    freq_base = base;
    rot_dim = rot;
    n_tokens = n;
  }
};

}  // namespace

void Rope(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim, int rot_dim, float freq_base,
          bool neox) {
  // cos/sin per token (shared by every head and, through the cache, by every layer), angles in
  // double as in the reference.
  const int half = rot_dim / 2;
  if (n_tokens <= 0) return;
  thread_local RopeAngles angles;
  angles.Update(positions, n_tokens, rot_dim, freq_base);
  for (int t = 0; t < n_tokens; ++t) {
    const float* cos_t = angles.cos_t.get() + int64_t{t} * half;
    const float* sin_t = angles.sin_t.get() + int64_t{t} * half;
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + (int64_t{t} * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const float x0 = xh[i0];
        const float x1 = xh[i1];
        xh[i0] = x0 * cos_t[i] - x1 * sin_t[i];
        xh[i1] = x0 * sin_t[i] + x1 * cos_t[i];
      }
    }
  }
}

void Softmax(float* x, int n) { cpu::SoftmaxWith(cpu::ActiveKernels(), x, n); }

float ExpShiftSum(float* x, int64_t n, float max) { return cpu::ActiveKernels().exp_shift_sum(x, n, max); }

int64_t ArgMax(const float* x, int64_t n) { return cpu::ActiveKernels().arg_max(x, n); }

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  cpu::SiluMulWith(cpu::ActiveKernels(), gate, up, n, out);
}

void Relu2Mul(const float* gate, const float* up, int64_t n, float* out) {
  cpu::Relu2MulWith(cpu::ActiveKernels(), gate, up, n, out);
}

void WriteKv(const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens, const float* k, const float* v) {
  cpu::WriteKvWith(cpu::ActiveKernels(), kv, block_table, pos0, n_tokens, k, v);
}

void AttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table, int pos0,
                    float scale, float* out, float* scratch) {
  cpu::AttentionPagedWith(cpu::ActiveKernels(), q, n_tokens, n_heads, kv, block_table, pos0, scale, out, scratch,
                          nullptr);
}

void AttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table, int pos0,
                    float scale, float* out, float* scratch, ThreadPool& pool) {
  cpu::AttentionPagedWith(cpu::ActiveKernels(), q, n_tokens, n_heads, kv, block_table, pos0, scale, out, scratch,
                          &pool);
}

void AttentionSharedPrefix(const float* const* q, int n_seqs, int n_heads, const PagedKv& kv,
                           const int32_t* const* tables, const int32_t* pos, int shared_positions, float scale,
                           float* const* out, ThreadPool& pool) {
  cpu::AttentionSharedPrefixWith(cpu::ActiveKernels(), q, n_seqs, n_heads, kv, tables, pos, shared_positions, scale,
                                 out, &pool);
}

}  // namespace bitfleet::kernels

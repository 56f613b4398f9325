// AVX2 matmul kernels (compiled with -mavx2 -mfma -mf16c). Only intrinsics and internal-linkage
// helpers: see the note in kernels/cpu/kernel_table.h.
//
// Integer path: vpmaddubsw multiplies unsigned codes by signed int8 activations and adds pairs
// into int16 (no saturation here: |pair| <= 2 * 15 * 127 for Q4, 2 * 3 * 127 for ternary codes,
// and Q8_0 uses the sign trick |w| × sign(q, w) <= 2 * 128 * 127), then vpmaddwd with ones
// widens to int32. Layouts as in packed_weight.h; AVX2 reads each 64-byte chunk as two halves.
//
// Q4_0 / Q4_1 / Q8_0 scale each 32-block by its own activation step (ActView::block_steps).
// Rather than convert and scale every block's 8-lane dot apart, the kernels first fold the
// blocks of one load step (4 for Q4, 2 for Q8) into a single int32 vector whose lanes each hold
// part of one block, then scale it by one vector of d × step products: one multiply and one FMA
// per (row, token, step) instead of one FMA per block.
#include <immintrin.h>

#include "kernels/cpu/variant_fns.h"

namespace bitfleet::kernels::cpu::avx2 {
namespace {

constexpr int kTokenTile = 4;

// The ternary kernels' activation step: one per token. Q4/Q8 kernels read block_steps instead.
inline float ActScale(const ActView& x, int t) { return x.absmax[t] / 127.0f; }

// Prefetches the next row's codes at the same offset, so DRAM stays busy through each row's
// epilogue (see avx512_matmul.cc). Prefetches never fault, past the end included.
inline void Prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float HalfToFloat1(uint16_t h) { return _cvtsh_ss(h); }

// Small runs of per-block values repeated across a vector, in the lane orders of the folded
// block dots below. Unaligned loads; none reads past the run.
// [h0 h1 h2 h3 | h0 h1 h2 h3] from four fp16 values.
inline __m256 HalfQuadTwice(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h))));
}
// [f0 f1 f2 f3 | f0 f1 f2 f3] from four floats.
inline __m256 FloatQuadTwice(const float* f) { return _mm256_broadcast_ps(reinterpret_cast<const __m128*>(f)); }
// [h0 h1 h0 h1 ...] from two fp16 values.
inline __m256 HalfPairRepeated(const uint16_t* h) { return _mm256_cvtph_ps(_mm_broadcastd_epi32(_mm_loadu_si32(h))); }
// [f0 f1 f0 f1 ...] from two floats.
inline __m256 FloatPairRepeated(const float* f) {
  return _mm256_castsi256_ps(_mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(f))));
}

inline __m256 Widen(__m256i products16) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(products16, _mm256_set1_epi16(1)));
}

// sum_i a[i] * b[i] over floats.
inline float DotF32(const float* a, const float* b, uint64_t n) {
  __m256 acc = _mm256_setzero_ps();
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = Hsum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// sum_b half(h[b]) * s[b] (fp16 weight scales or mins times the blocks' scaled activation sums).
inline float DotHalfFloat(const uint16_t* h, const float* s, uint64_t n) {
  __m256 acc = _mm256_setzero_ps();
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 hv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    acc = _mm256_fmadd_ps(hv, _mm256_loadu_ps(s + i), acc);
  }
  float r = Hsum(acc);
  for (; i < n; ++i) r += HalfToFloat1(h[i]) * s[i];
  return r;
}

// ---- ternary: per 256-block, half h of the 64 bytes holds elements h*32 + k + {0,64,128,192} ----

template <int TN>
inline void TernaryTile(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  const uint8_t* row = w.data + r * w.row_bytes;
  const float* d = w.scales + r * w.blocks;
  const int8_t* a0 = x.q + t0 * x.stride;
  const __m256i mask = _mm256_set1_epi8(3);
  __m256 acc[TN];
  for (int t = 0; t < TN; ++t) acc[t] = _mm256_setzero_ps();
  for (uint64_t b = 0; b < w.blocks; ++b) {
    Prefetch(row + w.row_bytes + b * 64);
    __m256i c[8];
    for (int h = 0; h < 2; ++h) {
      const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(row + b * 64 + h * 32));
      c[h * 4 + 0] = _mm256_and_si256(v, mask);
      c[h * 4 + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), mask);
      c[h * 4 + 2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
      c[h * 4 + 3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), mask);
    }
    const __m256 db = _mm256_set1_ps(d[b]);
    for (int t = 0; t < TN; ++t) {
      const int8_t* a = a0 + t * x.stride + b * 256;
      // int16 lanes sum 8 pair products of at most 2 * 3 * 127 each: no overflow.
      __m256i s = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 4; ++l) {
          const __m256i av = _mm256_load_si256(reinterpret_cast<const __m256i*>(a + l * 64 + h * 32));
          s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c[h * 4 + l], av));
        }
      }
      acc[t] = _mm256_fmadd_ps(Widen(s), db, acc[t]);
    }
  }
  const uint64_t n256 = x.stride / 256;
  for (int t = 0; t < TN; ++t) {
    const float bias = DotF32(d, x.sums256 + (t0 + t) * n256, w.blocks);
    out[(t0 + t) * w.rows + r] = (Hsum(acc[t]) - bias) * ActScale(x, t0 + t);
  }
}

// ---- Q4: per 128-group, half h: low nibbles = block h, high nibbles = block 2 + h ----

// The four blocks' vpmaddubsw pair sums m[j] folded into int32 lanes [b0 b1 b2 b3 | b0 b1 b2 b3]
// (each 128-bit half: block j's dot over that half's 16 columns). Three vphaddw then vpmaddwd:
// an int16 lane ends up holding 4 pair sums, |4 × 2 × 15 × 128| < 2^15, so nothing saturates.
inline __m256i Q4GroupDots(const __m256i m[4]) {
  const __m256i m01 = _mm256_hadd_epi16(m[0], m[1]);
  const __m256i m23 = _mm256_hadd_epi16(m[2], m[3]);
  return _mm256_madd_epi16(_mm256_hadd_epi16(m01, m23), _mm256_set1_epi16(1));
}

template <int TN, bool kHasMin>
inline void Q4Tile(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  const uint8_t* row = w.data + r * w.row_bytes;
  const uint16_t* hd = w.half_d + r * w.blocks;
  const uint64_t n32 = x.stride / 32;
  const int8_t* a0 = x.q + t0 * x.stride;
  const float* steps0 = x.block_steps + t0 * n32;
  const __m256i mask = _mm256_set1_epi8(15);
  __m256 acc[TN];
  for (int t = 0; t < TN; ++t) acc[t] = _mm256_setzero_ps();
  const uint64_t groups = w.blocks / 4;
  for (uint64_t g = 0; g < groups; ++g) {
    Prefetch(row + w.row_bytes + g * 64);
    __m256i c[4];  // c[j]: the codes of block 4g + j
    for (int h = 0; h < 2; ++h) {
      const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(row + g * 64 + h * 32));
      c[h] = _mm256_and_si256(v, mask);
      c[2 + h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
    }
    const __m256 d = HalfQuadTwice(hd + g * 4);  // the lane order of Q4GroupDots
    for (int t = 0; t < TN; ++t) {
      const int8_t* a = a0 + t * x.stride + g * 128;
      __m256i m[4];
      for (int j = 0; j < 4; ++j) {
        m[j] = _mm256_maddubs_epi16(c[j], _mm256_load_si256(reinterpret_cast<const __m256i*>(a + j * 32)));
      }
      const __m256 steps = FloatQuadTwice(steps0 + t * n32 + g * 4);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q4GroupDots(m)), _mm256_mul_ps(d, steps), acc[t]);
    }
  }
  for (int t = 0; t < TN; ++t) {
    const float* scaled_sums = x.scaled_sums + (t0 + t) * n32;
    // Q4_0: value (c - 8) * d; Q4_1: value c * d + m. The zero-point / min term takes the
    // blocks' activation sums already in real units (sum times step).
    const float bias = kHasMin ? DotHalfFloat(w.half_m + r * w.blocks, scaled_sums, w.blocks)
                               : -8.0f * DotHalfFloat(hd, scaled_sums, w.blocks);
    out[(t0 + t) * w.rows + r] = Hsum(acc[t]) + bias;
  }
}

// ---- Q8: signed codes; |w| × sign(q, w) keeps vpmaddubsw in range; two blocks per step ----

template <int TN>
inline void Q8Tile(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  const uint8_t* row = w.data + r * w.row_bytes;
  const uint16_t* hd = w.half_d + r * w.blocks;
  const uint64_t n32 = x.stride / 32;
  const int8_t* a0 = x.q + t0 * x.stride;
  const float* steps0 = x.block_steps + t0 * n32;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[TN];
  for (int t = 0; t < TN; ++t) acc[t] = _mm256_setzero_ps();
  // Rows hold an even number of blocks (packed_weight.h): blocks b, b + 1 fill one 64-byte line.
  for (uint64_t b = 0; b < w.blocks; b += 2) {
    Prefetch(row + w.row_bytes + b * 32);
    const __m256i v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(row + b * 32));
    const __m256i v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(row + b * 32 + 32));
    const __m256i abs0 = _mm256_sign_epi8(v0, v0);
    const __m256i abs1 = _mm256_sign_epi8(v1, v1);
    const __m256 d = HalfPairRepeated(hd + b);  // the lane order of `dots` below
    for (int t = 0; t < TN; ++t) {
      const int8_t* a = a0 + t * x.stride + b * 32;
      const __m256i av0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a));
      const __m256i av1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a + 32));
      const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(abs0, _mm256_sign_epi8(av0, v0)), ones);
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(abs1, _mm256_sign_epi8(av1, v1)), ones);
      // Lanes [b0 b1 b0 b1 | b0 b1 b0 b1], each part of one block's dot.
      const __m256i dots = _mm256_add_epi32(_mm256_unpacklo_epi32(p0, p1), _mm256_unpackhi_epi32(p0, p1));
      const __m256 steps = FloatPairRepeated(steps0 + t * n32 + b);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), _mm256_mul_ps(d, steps), acc[t]);
    }
  }
  for (int t = 0; t < TN; ++t) out[(t0 + t) * w.rows + r] = Hsum(acc[t]);
}

// Rows per cache block for batches (see avx512_matmul.cc): the block's rows stay in L2 while
// every token tile passes over them.
constexpr uint64_t kBlockBytes = 96 * 1024;

inline int64_t RowsPerBlock(uint64_t row_bytes) {
  const uint64_t rows = kBlockBytes / (row_bytes == 0 ? 1 : row_bytes);
  return static_cast<int64_t>(rows < 1 ? 1 : rows > 256 ? 256 : rows);
}

template <template <int> class Tile, int TN>
inline void RowRange(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, int t0, float* out) {
  for (int64_t r = r0; r < r1; ++r) Tile<TN>::Run(w, r, x, t0, out);
}

// Rows [r0, r1), all tokens: cache blocks of rows, token tiles of kTokenTile inside each.
template <template <int> class Tile>
inline void ForTiles(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  const int64_t block = x.n_tokens == 1 ? r1 - r0 : RowsPerBlock(w.row_bytes);
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = rb + block < r1 ? rb + block : r1;
    int t0 = 0;
    for (; t0 + kTokenTile <= x.n_tokens; t0 += kTokenTile) RowRange<Tile, kTokenTile>(w, rb, re, x, t0, out);
    switch (x.n_tokens - t0) {
      case 3:
        RowRange<Tile, 3>(w, rb, re, x, t0, out);
        break;
      case 2:
        RowRange<Tile, 2>(w, rb, re, x, t0, out);
        break;
      case 1:
        RowRange<Tile, 1>(w, rb, re, x, t0, out);
        break;
      default:
        break;
    }
  }
}

template <int TN>
struct TernaryT {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    TernaryTile<TN>(w, r, x, t0, out);
  }
};
template <int TN>
struct Q4_0T {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    Q4Tile<TN, false>(w, r, x, t0, out);
  }
};
template <int TN>
struct Q4_1T {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    Q4Tile<TN, true>(w, r, x, t0, out);
  }
};
template <int TN>
struct Q8T {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    Q8Tile<TN>(w, r, x, t0, out);
  }
};

// ---- float weights: 8 columns per step, two accumulators per token, scalar tail ----

struct LoadF32 {
  static __m256 Vec(const uint8_t* row, uint64_t i) { return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i); }
  static float One(const uint8_t* row, uint64_t i) { return reinterpret_cast<const float*>(row)[i]; }
};
struct LoadF16 {
  static __m256 Vec(const uint8_t* row, uint64_t i) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + i)));
  }
  static float One(const uint8_t* row, uint64_t i) { return HalfToFloat1(reinterpret_cast<const uint16_t*>(row)[i]); }
};
struct LoadBf16 {
  static __m256 Vec(const uint8_t* row, uint64_t i) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static float One(const uint8_t* row, uint64_t i) {
    const uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[i]) << 16;
    return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(bits))));
  }
};

template <typename Load, int TN>
inline void FloatTile(const WeightView& w, int64_t r, const float* x, int t0, float* out) {
  const uint8_t* row = w.data + r * w.row_bytes;
  const float* xt = x + t0 * w.cols;
  __m256 acc0[TN];
  __m256 acc1[TN];
  for (int t = 0; t < TN; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
  uint64_t c = 0;
  for (; c + 16 <= w.cols; c += 16) {
    Prefetch(row + w.row_bytes + c * (w.row_bytes / w.cols));
    const __m256 w0 = Load::Vec(row, c);
    const __m256 w1 = Load::Vec(row, c + 8);
    for (int t = 0; t < TN; ++t) {
      acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt + t * w.cols + c), acc0[t]);
      acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + t * w.cols + c + 8), acc1[t]);
    }
  }
  for (int t = 0; t < TN; ++t) {
    float s = Hsum(_mm256_add_ps(acc0[t], acc1[t]));
    for (uint64_t i = c; i < w.cols; ++i) s += Load::One(row, i) * xt[t * w.cols + i];
    out[(t0 + t) * w.rows + r] = s;
  }
}

template <typename Load>
inline void MatMulFloat(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out) {
  const int64_t block = n == 1 ? r1 - r0 : RowsPerBlock(w.row_bytes);
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = rb + block < r1 ? rb + block : r1;
    int t0 = 0;
    for (; t0 + kTokenTile <= n; t0 += kTokenTile) {
      for (int64_t r = rb; r < re; ++r) FloatTile<Load, kTokenTile>(w, r, x, t0, out);
    }
    for (int64_t r = rb; r < re; ++r) {
      switch (n - t0) {
        case 3:
          FloatTile<Load, 3>(w, r, x, t0, out);
          break;
        case 2:
          FloatTile<Load, 2>(w, r, x, t0, out);
          break;
        case 1:
          FloatTile<Load, 1>(w, r, x, t0, out);
          break;
        default:
          break;
      }
    }
  }
}

}  // namespace

void MatMulTernary(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  ForTiles<TernaryT>(w, r0, r1, x, out);
}
void MatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  ForTiles<Q4_0T>(w, r0, r1, x, out);
}
void MatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  ForTiles<Q4_1T>(w, r0, r1, x, out);
}
void MatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  ForTiles<Q8T>(w, r0, r1, x, out);
}
void MatMulF32(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out) {
  MatMulFloat<LoadF32>(w, r0, r1, x, n, out);
}
void MatMulF16(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out) {
  MatMulFloat<LoadF16>(w, r0, r1, x, n, out);
}
void MatMulBf16(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out) {
  MatMulFloat<LoadBf16>(w, r0, r1, x, n, out);
}

}  // namespace bitfleet::kernels::cpu::avx2

// AVX-512 VNNI matmul kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mavx512vnni -mf16c -mfma). Only intrinsics and internal-linkage helpers: see the note in
// kernels/cpu/kernel_table.h.
//
// Integer path: weights are unsigned codes c (layouts in packed_weight.h) and activations
// signed int8 q, which is exactly what vpdpbusd multiplies (u8 × s8, four products summed into
// each int32 lane). The zero point of the codes is removed once per block with the activation
// block sums, outside the hot loop. Each row is processed for up to 4 tokens at a time so the
// unpacked weight registers are reused across tokens (the row's codes stay in L1 for the next
// token tile).
#include <immintrin.h>

#include "kernels/cpu/variant_fns.h"

namespace bitfleet::kernels::cpu::avx512 {
namespace {

constexpr int kTokenTile = 4;

// The ternary kernels' activation step: one per token. Q4/Q8 kernels read block_steps instead.
inline float ActScale(const ActView& x, int t) { return x.absmax[t] / 127.0f; }

// Decode streams the weight from DRAM, and each row's epilogue (reductions, zero-point bias)
// issues no loads; prefetching the next row tile's codes while working on this one keeps the
// memory busy through it (measured: ternary decode 0.58 -> 1.0 of the read roofline, 1 thread).
// The address may run past the matrix end: prefetches never fault.
inline void Prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }

// A second prefetch, into L2, further ahead: at least a page (4 KiB) past the next row tile,
// and at least two tiles ahead. A core has only ~16 L1 miss buffers, which at DRAM latency caps
// it near 10-13 GB/s; requests into L2 are tracked by L2's larger queue, so running further
// ahead there keeps more of the stream in flight (measured with two threads on BitNet-700M and
// dim-2048 shapes: ternary decode +10-20%, Q4_0 +10-15%, Q8_0 within noise).
inline void PrefetchFar(const uint8_t* src, int rows_ahead, uint64_t row_bytes) {
  uint64_t rows = 4096 / row_bytes + static_cast<uint64_t>(rows_ahead);
  if (rows < 2 * static_cast<uint64_t>(rows_ahead)) rows = 2 * static_cast<uint64_t>(rows_ahead);
  _mm_prefetch(reinterpret_cast<const char*>(src + rows * row_bytes), _MM_HINT_T1);
}

// sum_i a[i] * b[i] over floats.
inline float DotF32(const float* a, const float* b, uint64_t n) {
  __m512 acc = _mm512_setzero_ps();
  uint64_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// sum_b half(h[b]) * s[b] (fp16 scales times float activation block sums).
inline float DotHalfFloat(const uint16_t* h, const float* s, uint64_t n) {
  __m512 acc = _mm512_setzero_ps();
  uint64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 hv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i)));
    acc = _mm512_fmadd_ps(hv, _mm512_loadu_ps(s + i), acc);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 hv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h + i));
    acc = _mm512_fmadd_ps(hv, _mm512_maskz_loadu_ps(m, s + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// ---- ternary: 64 code bytes per 256 elements, 4 vectors after shift+mask ----
//
// Tiles are RN rows × TN tokens: the unpacked codes of a row are reused for TN tokens and each
// activation load for RN rows, and the RN × TN dot products are independent dependency chains.

// The four code vectors of block b of row `row` (element k + 64 j in byte k of vector j), with
// the row tile `rows_ahead` rows further prefetched into L1 and the stream further on into L2.
inline void LoadTernaryBlock(const WeightView& w, int64_t row, uint64_t b, int rows_ahead, __m512i c[4]) {
  const __m512i mask = _mm512_set1_epi8(3);
  const uint8_t* src = w.data + row * w.row_bytes + b * 64;
  Prefetch(src + rows_ahead * w.row_bytes);
  PrefetchFar(src, rows_ahead, w.row_bytes);
  const __m512i v = _mm512_load_si512(src);
  c[0] = _mm512_and_si512(v, mask);
  c[1] = _mm512_and_si512(_mm512_srli_epi16(v, 2), mask);
  c[2] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
  c[3] = _mm512_and_si512(_mm512_srli_epi16(v, 6), mask);
}

template <int RN, int TN>
inline void TernaryTile(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  const int8_t* a0 = x.q + t0 * x.stride;
  __m512 acc[RN][TN];
  for (int i = 0; i < RN; ++i) {
    for (int t = 0; t < TN; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (uint64_t b = 0; b < w.blocks; ++b) {
    __m512i c[RN][4];
    __m512 db[RN];
    for (int i = 0; i < RN; ++i) {
      LoadTernaryBlock(w, r + i, b, RN, c[i]);
      db[i] = _mm512_set1_ps(w.scales[(r + i) * w.blocks + b]);
    }
    for (int t = 0; t < TN; ++t) {
      const int8_t* a = a0 + t * x.stride + b * 256;
      const __m512i a_0 = _mm512_load_si512(a);
      const __m512i a_1 = _mm512_load_si512(a + 64);
      const __m512i a_2 = _mm512_load_si512(a + 128);
      const __m512i a_3 = _mm512_load_si512(a + 192);
      for (int i = 0; i < RN; ++i) {
        // Two chains of two, not one of four: halves the dependency latency per block.
        __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[i][0], a_0);
        __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[i][1], a_1);
        s0 = _mm512_dpbusd_epi32(s0, c[i][2], a_2);
        s1 = _mm512_dpbusd_epi32(s1, c[i][3], a_3);
        acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), db[i], acc[i][t]);
      }
    }
  }
  const uint64_t n256 = x.stride / 256;
  for (int i = 0; i < RN; ++i) {
    const float* d = w.scales + (r + i) * w.blocks;
    for (int t = 0; t < TN; ++t) {
      // Codes are w + 1: subtract sum_b d_b * S_b.
      const float bias = DotF32(d, x.sums256 + (t0 + t) * n256, w.blocks);
      out[(t0 + t) * w.rows + r + i] = (_mm512_reduce_add_ps(acc[i][t]) - bias) * ActScale(x, t0 + t);
    }
  }
}

// The same for rows with one scale (WeightView::row_scales): the codes × activations sum over
// the whole row in int32 (at most 3 · 127 per element, so no overflow below 5.6M columns),
// without a convert and multiply per block, and the per-block scales are never read (6% fewer
// bytes: decode streams 64 bytes per 256 weights instead of 68). Then y = s_r · step_t · (sum -
// S_t), exactly sum w q before the two float multiplies.
// Token t's activation sum over the whole row: the per-256 sums are exact integers held in
// floats.
inline int32_t TokenActivationSum(const ActView& x, int t) {
  const uint64_t n256 = x.stride / 256;
  float total = 0.0f;
  for (uint64_t b = 0; b < n256; ++b) total += x.sums256[t * n256 + b];
  return static_cast<int32_t>(total);
}

template <int RN, int TN>
inline void TernaryTileUniform(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  const int8_t* a0 = x.q + t0 * x.stride;
  __m512i acc0[RN][TN], acc1[RN][TN];
  for (int i = 0; i < RN; ++i) {
    for (int t = 0; t < TN; ++t) acc0[i][t] = acc1[i][t] = _mm512_setzero_si512();
  }
  for (uint64_t b = 0; b < w.blocks; ++b) {
    __m512i c[RN][4];
    for (int i = 0; i < RN; ++i) LoadTernaryBlock(w, r + i, b, RN, c[i]);
    for (int t = 0; t < TN; ++t) {
      const int8_t* a = a0 + t * x.stride + b * 256;
      const __m512i a_0 = _mm512_load_si512(a);
      const __m512i a_1 = _mm512_load_si512(a + 64);
      const __m512i a_2 = _mm512_load_si512(a + 128);
      const __m512i a_3 = _mm512_load_si512(a + 192);
      for (int i = 0; i < RN; ++i) {
        acc0[i][t] = _mm512_dpbusd_epi32(acc0[i][t], c[i][0], a_0);
        acc1[i][t] = _mm512_dpbusd_epi32(acc1[i][t], c[i][1], a_1);
        acc0[i][t] = _mm512_dpbusd_epi32(acc0[i][t], c[i][2], a_2);
        acc1[i][t] = _mm512_dpbusd_epi32(acc1[i][t], c[i][3], a_3);
      }
    }
  }
  for (int t = 0; t < TN; ++t) {
    const int32_t s_t = TokenActivationSum(x, t0 + t);
    for (int i = 0; i < RN; ++i) {
      const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0[i][t], acc1[i][t])) - s_t;
      out[(t0 + t) * w.rows + r + i] = static_cast<float>(sum) * w.row_scales[r + i] * ActScale(x, t0 + t);
    }
  }
}

// The 16 lane sums of v[0..15] (int32, exact), result k being v[k]'s: pairs are interleaved and
// added level by level (32-bit, 64-bit, then 128-bit lanes), 45 operations for all 16 instead
// of ~10 for each alone.
inline __m512i ReduceAdd16(const __m512i (&v)[16]) {
  __m512i s2[8];  // per 128-bit lane: v[2i] and v[2i+1] folded to two lanes each
  for (int i = 0; i < 8; ++i) {
    s2[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  }
  __m512i s4[4];  // per 128-bit lane: the lane sums of v[4i .. 4i+3], in that order
  for (int i = 0; i < 4; ++i) {
    s4[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(s2[2 * i], s2[2 * i + 1]),
                             _mm512_unpackhi_epi64(s2[2 * i], s2[2 * i + 1]));
  }
  // Fold the four 128-bit lanes: s8[i] holds, as lanes (of four int32), [s4[2i].0+2, s4[2i].1+3,
  // s4[2i+1].0+2, s4[2i+1].1+3]; then the last fold gives [s4[0], s4[1], s4[2], s4[3]] totals.
  __m512i s8[2];
  for (int i = 0; i < 2; ++i) {
    s8[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(s4[2 * i], s4[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_i32x4(s4[2 * i], s4[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  return _mm512_add_epi32(_mm512_shuffle_i32x4(s8[0], s8[1], _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(s8[0], s8[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// TernaryTileUniform for 8 tokens and two rows: one accumulator per (row, token) (16 of 32
// registers) and the 16 sums reduced together (ReduceAdd16). The 16-token decode steps of a
// batch spent ~10 operations per (row, token) on its own horizontal sum against 16 vpdpbusd on
// 1024-column rows. The integer sums, and so the results, equal TernaryTileUniform's.
inline void TernaryTileUniform2x8(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  constexpr int kRows = 2;
  constexpr int kTokens = 8;
  const int8_t* a0 = x.q + t0 * x.stride;
  __m512i acc[kRows * kTokens];
  for (__m512i& a : acc) a = _mm512_setzero_si512();
  for (uint64_t b = 0; b < w.blocks; ++b) {
    __m512i c[kRows][4];
    for (int i = 0; i < kRows; ++i) LoadTernaryBlock(w, r + i, b, kRows, c[i]);
    for (int t = 0; t < kTokens; ++t) {
      const int8_t* a = a0 + t * x.stride + b * 256;
      for (int k = 0; k < 4; ++k) {
        const __m512i ak = _mm512_load_si512(a + 64 * k);
        for (int i = 0; i < kRows; ++i) acc[i * kTokens + t] = _mm512_dpbusd_epi32(acc[i * kTokens + t], c[i][k], ak);
      }
    }
  }
  alignas(64) int32_t sums[kRows * kTokens];
  _mm512_store_si512(sums, ReduceAdd16(acc));
  for (int t = 0; t < kTokens; ++t) {
    const int32_t s_t = TokenActivationSum(x, t0 + t);
    for (int i = 0; i < kRows; ++i) {
      out[(t0 + t) * w.rows + r + i] =
          static_cast<float>(sums[i * kTokens + t] - s_t) * w.row_scales[r + i] * ActScale(x, t0 + t);
    }
  }
}

// ---- Q4 / Q8: 32-blocks, each with its weight scale d and activation step e ----
//
// A block's integer dot is scaled by d * e. Two forms:
// - Batches (TN > 1) run 128 elements (four blocks) at a time. The two 64-byte halves of the
//   codes, and of each token's activations, are regrouped by 128-bit lanes into [h0.L0 h0.L2
//   h1.L0 h1.L2] and [h0.L1 h0.L3 h1.L1 h1.L3], so lane group k of both holds 32 elements of
//   block k: the two vpdpbusd accumulate into one int32 vector (four lanes per block), converted
//   once and scaled per lane by d_k * e_k (the row's scales and the token's steps each spread
//   over the lane groups once per row / token, then one multiply per row and token). Scaling
//   each half on its own costs one more convert, multiply and add per row, token and 128
//   elements; batches are compute bound (2048x2048, 4 tokens, one thread, hot, against the
//   per-token kernels that scaled once per row: per half Q4_0 +19%, Q8_0 +35%; regrouped
//   +3-8%).
// - One token (decode, memory bound) scales each 64-element dot (two blocks, eight lanes each)
//   as it is: the regrouping would be paid per row and token with nothing to reuse it.
// The zero-point / min term uses the activation sums already in real units (scaled_sums).

// The two lane-regrouped vectors of halves h0 (elements 0..63) and h1 (64..127).
inline void SplitBlocks(__m512i h0, __m512i h1, __m512i* even, __m512i* odd) {
  *even = _mm512_shuffle_i64x2(h0, h1, _MM_SHUFFLE(2, 0, 2, 0));
  *odd = _mm512_shuffle_i64x2(h0, h1, _MM_SHUFFLE(3, 1, 3, 1));
}

// Four per-block floats, each over its block's four int32 lanes of a regrouped dot.
inline __m512 SpreadBlocks4(__m128 v4) {
  const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v4));
}

// Two per-block floats (lanes 0, 1 of v, or lanes 2, 3 with kHigh), each over its block's eight
// int32 lanes of a 64-element dot.
template <bool kHigh = false>
inline __m512 SpreadBlocks2(__m128 v) {
  const __m512i idx = kHigh ? _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2)
                            : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

// One four-block group of a batch: acc[i][t] += the dots of rows i's regrouped codes (c_even,
// c_odd; their scales d spread over the lane groups) with token t's regrouped activations (at
// a + t * stride), each block scaled by d times the token's step (at steps + t * n32).
template <int RN, int TN>
inline void QuadDots(const __m512i* c_even, const __m512i* c_odd, const __m512* d, const int8_t* a, uint64_t stride,
                     const float* steps, uint64_t n32, __m512 (*acc)[TN]) {
  for (int t = 0; t < TN; ++t) {
    __m512i a_even, a_odd;
    SplitBlocks(_mm512_load_si512(a + t * stride), _mm512_load_si512(a + t * stride + 64), &a_even, &a_odd);
    const __m512 e = SpreadBlocks4(_mm_loadu_ps(steps + t * n32));
    for (int i = 0; i < RN; ++i) {
      __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c_even[i], a_even);
      s = _mm512_dpbusd_epi32(s, c_odd[i], a_odd);
      acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d[i], e), acc[i][t]);
    }
  }
}

// Four fp16 scales as floats.
inline __m128 LoadHalf4(const uint16_t* h) {
  return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h)));
}

// Q4: 64 bytes per 128 elements: low nibbles = elements 0..63, high = 64..127.
template <int RN, int TN, bool kHasMin>
inline void Q4Tile(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  const uint64_t n32 = x.stride / 32;
  const int8_t* a0 = x.q + t0 * x.stride;
  const float* steps0 = x.block_steps + t0 * n32;
  const __m512i mask = _mm512_set1_epi8(15);
  __m512 acc[RN][TN];
  for (int i = 0; i < RN; ++i) {
    for (int t = 0; t < TN; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  const uint64_t groups = w.blocks / 4;
  for (uint64_t g = 0; g < groups; ++g) {
    __m512i lo[RN], hi[RN];
    __m128 d4[RN];
    for (int i = 0; i < RN; ++i) {
      const uint8_t* src = w.data + (r + i) * w.row_bytes + g * 64;
      Prefetch(src + RN * w.row_bytes);
      PrefetchFar(src, RN, w.row_bytes);
      const __m512i v = _mm512_load_si512(src);
      lo[i] = _mm512_and_si512(v, mask);
      hi[i] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
      d4[i] = LoadHalf4(w.half_d + (r + i) * w.blocks + g * 4);
    }
    if constexpr (TN == 1) {
      const int8_t* a = a0 + g * 128;
      const __m512i a_lo = _mm512_load_si512(a);
      const __m512i a_hi = _mm512_load_si512(a + 64);
      const __m128 e4 = _mm_loadu_ps(steps0 + g * 4);
      for (int i = 0; i < RN; ++i) {
        const __m128 de4 = _mm_mul_ps(d4[i], e4);
        const __m512i s_lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[i], a_lo);
        const __m512i s_hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi[i], a_hi);
        acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s_lo), SpreadBlocks2(de4), acc[i][0]);
        acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s_hi), SpreadBlocks2<true>(de4), acc[i][0]);
      }
    } else {
      __m512i c_even[RN], c_odd[RN];
      __m512 d[RN];
      for (int i = 0; i < RN; ++i) {
        SplitBlocks(lo[i], hi[i], &c_even[i], &c_odd[i]);
        d[i] = SpreadBlocks4(d4[i]);
      }
      QuadDots<RN, TN>(c_even, c_odd, d, a0 + g * 128, x.stride, steps0 + g * 4, n32, acc);
    }
  }
  for (int i = 0; i < RN; ++i) {
    for (int t = 0; t < TN; ++t) {
      const float* scaled_sums = x.scaled_sums + (t0 + t) * n32;
      // Q4_0: value (c - 8) * d; Q4_1: value c * d + m.
      const float bias = kHasMin ? DotHalfFloat(w.half_m + (r + i) * w.blocks, scaled_sums, w.blocks)
                                 : -8.0f * DotHalfFloat(w.half_d + (r + i) * w.blocks, scaled_sums, w.blocks);
      out[(t0 + t) * w.rows + r + i] = _mm512_reduce_add_ps(acc[i][t]) + bias;
    }
  }
}

// Q8: signed codes made unsigned by adding 128 (xor 0x80), removed with the block sums. Rows
// hold an even number of blocks: batches take four blocks at a time and a last pair (blocks %
// 4 == 2) as one token does, 64 elements at a time.
template <int RN, int TN>
inline void Q8Tile(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
  const uint64_t n32 = x.stride / 32;
  const int8_t* a0 = x.q + t0 * x.stride;
  const float* steps0 = x.block_steps + t0 * n32;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[RN][TN];
  for (int i = 0; i < RN; ++i) {
    for (int t = 0; t < TN; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  const uint64_t quads = TN == 1 ? 0 : w.blocks / 4;
  for (uint64_t g = 0; g < quads; ++g) {
    __m512i c_even[RN], c_odd[RN];
    __m512 d[RN];
    for (int i = 0; i < RN; ++i) {
      const uint8_t* src = w.data + (r + i) * w.row_bytes + g * 128;
      Prefetch(src + RN * w.row_bytes);
      Prefetch(src + RN * w.row_bytes + 64);
      PrefetchFar(src, RN, w.row_bytes);
      PrefetchFar(src + 64, RN, w.row_bytes);
      SplitBlocks(_mm512_xor_si512(_mm512_load_si512(src), flip), _mm512_xor_si512(_mm512_load_si512(src + 64), flip),
                  &c_even[i], &c_odd[i]);
      d[i] = SpreadBlocks4(LoadHalf4(w.half_d + (r + i) * w.blocks + g * 4));
    }
    QuadDots<RN, TN>(c_even, c_odd, d, a0 + g * 128, x.stride, steps0 + g * 4, n32, acc);
  }
  for (uint64_t b = quads * 4; b < w.blocks; b += 2) {
    __m512i v[RN];
    __m128 d2[RN];
    for (int i = 0; i < RN; ++i) {
      const uint8_t* src = w.data + (r + i) * w.row_bytes + b * 32;
      Prefetch(src + RN * w.row_bytes);
      PrefetchFar(src, RN, w.row_bytes);
      v[i] = _mm512_xor_si512(_mm512_load_si512(src), flip);
      int32_t two_halves;
      __builtin_memcpy(&two_halves, w.half_d + (r + i) * w.blocks + b, sizeof(two_halves));
      d2[i] = _mm_cvtph_ps(_mm_cvtsi32_si128(two_halves));
    }
    for (int t = 0; t < TN; ++t) {
      const __m512i a = _mm512_load_si512(a0 + t * x.stride + b * 32);
      const __m128 e2 = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(steps0 + t * n32 + b)));
      for (int i = 0; i < RN; ++i) {
        const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[i], a);
        acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), SpreadBlocks2(_mm_mul_ps(d2[i], e2)), acc[i][t]);
      }
    }
  }
  for (int i = 0; i < RN; ++i) {
    for (int t = 0; t < TN; ++t) {
      const float* scaled_sums = x.scaled_sums + (t0 + t) * n32;
      const float bias = -128.0f * DotHalfFloat(w.half_d + (r + i) * w.blocks, scaled_sums, w.blocks);
      out[(t0 + t) * w.rows + r + i] = _mm512_reduce_add_ps(acc[i][t]) + bias;
    }
  }
}

// Rows per cache block for batches: a block's packed rows (about kBlockBytes) stay in L2 while
// every token tile passes over them, and one token tile's activations stay in L1 while the
// block's rows pass over it. Without it, each row would stream all tokens from L2.
constexpr uint64_t kBlockBytes = 96 * 1024;

inline int64_t RowsPerBlock(uint64_t row_bytes) {
  const uint64_t rows = kBlockBytes / (row_bytes == 0 ? 1 : row_bytes);
  return static_cast<int64_t>(rows < 4 ? 4 : rows > 256 ? 256 : rows / 4 * 4);
}

// One token tile [t0, t0 + TN) over rows [r0, r1): RN rows at a time, then one at a time.
template <template <int, int> class Tile, int RN, int TN>
inline void RowRange(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, int t0, float* out) {
  int64_t r = r0;
  for (; r + RN <= r1; r += RN) Tile<RN, TN>::Run(w, r, x, t0, out);
  for (; r < r1; ++r) Tile<1, TN>::Run(w, r, x, t0, out);
}

// Rows [r0, r1), all tokens. A single token (decode) takes kDecodeRows rows at a time
// (independent chains, activation loads shared); batches take two (register budget) in cache
// blocks of rows, token tiles of kTokenTile inside each block.
//
// kDecodeRows is also how many weight rows one thread streams from DRAM at once. Ternary rows
// (64 bytes per 256 weights, little work per byte) run best with four; Q4 rows (2x the bytes
// per weight, plus a scale stream) with two, Q8_0 rows (4x) with one: fewer concurrent streams
// per thread read closer to the bandwidth. Measured, two threads, cold 2048x2048 / 5632x2048 /
// 2048x5632, GB/s against a 28-31 GB/s read roofline: Q4_0 25.3 26.3 24.6 with four rows, 26.8
// 26.9 27.0 with two (one: the same, three: between, six: worse); Q8_0 26.5 27.0 23.9 with four,
// 27.7 27.5 26.5 with two, 28.8-29.6 29.4-29.6 27.8-28.3 with one; ternary 1-4% slower with two.
//
// kWideTokens > 0: whole tiles of that many tokens first (a Tile<2, kWideTokens> that fits the
// registers), then kTokenTile ones.
template <template <int, int> class Tile, int kDecodeRows = 4, int kWideTokens = 0>
inline void ForTiles(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (x.n_tokens == 1) {
    RowRange<Tile, kDecodeRows, 1>(w, r0, r1, x, 0, out);
    return;
  }
  const int64_t block = RowsPerBlock(w.row_bytes);
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = rb + block < r1 ? rb + block : r1;
    int t0 = 0;
    if constexpr (kWideTokens > 0) {
      for (; t0 + kWideTokens <= x.n_tokens; t0 += kWideTokens) RowRange<Tile, 2, kWideTokens>(w, rb, re, x, t0, out);
    }
    for (; t0 + kTokenTile <= x.n_tokens; t0 += kTokenTile) RowRange<Tile, 2, kTokenTile>(w, rb, re, x, t0, out);
    switch (x.n_tokens - t0) {
      case 3:
        RowRange<Tile, 2, 3>(w, rb, re, x, t0, out);
        break;
      case 2:
        RowRange<Tile, 2, 2>(w, rb, re, x, t0, out);
        break;
      case 1:
        RowRange<Tile, 2, 1>(w, rb, re, x, t0, out);
        break;
      default:
        break;
    }
  }
}

// Q4 / Q8 batches of at least this many tokens go through 16-row panels
// (avx512_panel_matmul.cc). Below it the row tiles above win: a panel's transposition is paid
// once per 16 rows and 1024 columns whatever the batch, and with few tokens it is not repaid.
// Measured, two threads, cold, panels against row tiles (µs): 32000x1024 Q8_0 at 4 tokens 2536
// -2830 against 1803-1951, at 5 2747 against 2908, at 16 3887-4462 against 5380-6359; Q4_1 at
// 5 2019 against 2692; the 1536x576 and 576x1536 shapes cross over at 4-5 tokens too.
constexpr int kPanelMinTokens = 5;
inline bool UsePanels(const ActView& x) { return x.n_tokens >= kPanelMinTokens; }
// Ternary batches take panels from 32 tokens: their row tiles need no per-block scaling, so the
// panels gain less and need more tokens to repay the transposition. Measured (2 threads, cold,
// µs, panels against row tiles): 2048x1024 at 16 tokens 162-207 against 183-235, at 128 906-1029
// against 1412-1793; 1024x2048 at 16 184-222 against 153-187, at 32 284-384 against 294-329, at
// 128 965-1071 against 1146-1413.
constexpr int kTernaryPanelMinTokens = 32;
inline bool UseTernaryPanels(const WeightView& w, const ActView& x) {
  return x.n_tokens >= kTernaryPanelMinTokens && w.cols <= 65536;
}

template <int RN, int TN>
struct TernaryT {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    TernaryTile<RN, TN>(w, r, x, t0, out);
  }
};
template <int RN, int TN>
struct TernaryUniformT {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    if constexpr (RN == 2 && TN == 8) {
      TernaryTileUniform2x8(w, r, x, t0, out);
    } else {
      TernaryTileUniform<RN, TN>(w, r, x, t0, out);
    }
  }
};
template <int RN, int TN>
struct Q4_0T {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    Q4Tile<RN, TN, false>(w, r, x, t0, out);
  }
};
template <int RN, int TN>
struct Q4_1T {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    Q4Tile<RN, TN, true>(w, r, x, t0, out);
  }
};
template <int RN, int TN>
struct Q8T {
  static void Run(const WeightView& w, int64_t r, const ActView& x, int t0, float* out) {
    Q8Tile<RN, TN>(w, r, x, t0, out);
  }
};

// ---- float weights: 16 columns per step, two accumulators per token ----

struct LoadF32 {
  static __m512 Full(const void* base, uint64_t i) { return _mm512_loadu_ps(static_cast<const float*>(base) + i); }
  static __m512 Part(const void* base, uint64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
  }
};
struct LoadF16 {
  static __m512 Full(const void* base, uint64_t i) {
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
  }
  static __m512 Part(const void* base, uint64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i));
  }
};
struct LoadBf16 {
  static __m512 Widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 Full(const void* base, uint64_t i) {
    return Widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
  }
  static __m512 Part(const void* base, uint64_t i, __mmask16 m) {
    return Widen(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i));
  }
};

template <typename Load, int TN>
inline void FloatTile(const WeightView& w, int64_t r, const float* x, int t0, float* out) {
  const uint8_t* row = w.data + r * w.row_bytes;
  const float* xt = x + t0 * w.cols;
  __m512 acc0[TN];
  __m512 acc1[TN];
  for (int t = 0; t < TN; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  uint64_t c = 0;
  for (; c + 32 <= w.cols; c += 32) {
    Prefetch(row + w.row_bytes + c * (w.row_bytes / w.cols));
    const __m512 w0 = Load::Full(row, c);
    const __m512 w1 = Load::Full(row, c + 16);
    for (int t = 0; t < TN; ++t) {
      acc0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xt + t * w.cols + c), acc0[t]);
      acc1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xt + t * w.cols + c + 16), acc1[t]);
    }
  }
  for (; c < w.cols; c += 16) {
    const uint64_t left = w.cols - c;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    const __m512 w0 = Load::Part(row, c, m);
    for (int t = 0; t < TN; ++t) {
      acc0[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, xt + t * w.cols + c), acc0[t]);
    }
  }
  for (int t = 0; t < TN; ++t) out[(t0 + t) * w.rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
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
  if (UseTernaryPanels(w, x)) return PanelMatMulTernary(w, r0, r1, x, out);
  if (w.row_scales != nullptr) {
    ForTiles<TernaryUniformT, 4, 8>(w, r0, r1, x, out);
  } else {
    ForTiles<TernaryT>(w, r0, r1, x, out);
  }
}
void MatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (UsePanels(x)) return PanelMatMulQ4_0(w, r0, r1, x, out);
  ForTiles<Q4_0T, 2>(w, r0, r1, x, out);
}
void MatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (UsePanels(x)) return PanelMatMulQ4_1(w, r0, r1, x, out);
  ForTiles<Q4_1T, 2>(w, r0, r1, x, out);
}
void MatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (UsePanels(x)) return PanelMatMulQ8_0(w, r0, r1, x, out);
  ForTiles<Q8T, 1>(w, r0, r1, x, out);
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

}  // namespace bitfleet::kernels::cpu::avx512

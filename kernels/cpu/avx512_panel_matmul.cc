// AVX-512 VNNI batch matmuls for Q4_0, Q4_1, Q8_0 and ternary weights through 16-row panels
// (compiled with the AVX-512 flags; only intrinsics and internal-linkage helpers: see
// kernels/cpu/kernel_table.h).
//
// Why: the row kernels of avx512_matmul.cc dot one row with one token along the columns, so the
// 32-column blocks' scales split every product (a convert, two multiplies and an add per row,
// token and four blocks, plus regrouping shuffles) and every output ends in a horizontal sum
// and a zero-point dot. Here 16 rows' codes are transposed once into a panel whose vector s
// holds, in lane i, row i's codes of columns 4s .. 4s+3. One vpdpbusd with a token's four
// activations broadcast then adds to 16 rows' sums at once: a block (8 vpdpbusd per token)
// costs one convert, one multiply and one FMA per 16 rows and token, and nothing is summed
// across lanes. The zero point enters as the integer the block's sum starts from (-z times the
// activation block sum), exact. A panel (16 rows × up to kPanelCols columns: 16 KiB of codes
// and its scales) stays in L1 while every token tile passes over it, and each token tile's
// partial sums are added into `out` panel by panel.
//
// Ternary rows (256-column blocks of 2-bit codes c = w + 1) take the same panels. With one scale
// per row (BitNet) a panel's integer sums, less the activation sums, are whole numbers below
// 2^24, so they are added into `out` as floats exactly and scaled once after the last panel:
// the result equals, bit for bit, the row kernels' integer sum times the row scale and step.
#include <immintrin.h>

#include "kernels/cpu/avx512_transpose.h"
#include "kernels/cpu/variant_fns.h"

namespace bitfleet::kernels::cpu::avx512 {
namespace {

constexpr int kPanelRows = 16;
constexpr uint64_t kPanelCols = 1024;  // a multiple of 128 (whole Q4 groups)
constexpr uint64_t kPanelBlocks = kPanelCols / 32;
constexpr int kPanelTokens = 8;  // tokens per register tile: 8 int32 + 8 float accumulators

enum class Kind { kQ4_0, kQ4_1, kQ8_0, kTernary, kTernaryUniform };

// The zero point z of the unsigned codes: value = (c - z) * d (Q4_1: c * d + m).
template <Kind kKind>
constexpr int32_t kZeroPoint = kKind == Kind::kQ8_0 ? 128 : kKind == Kind::kQ4_0 ? 8 : 0;

struct Panel {
  __m512i codes[kPanelCols / 4];  // vector s, lane i: row i's codes of columns 4s .. 4s+3
  __m512 d[kPanelBlocks];         // block b, lane i: row i's scale
  __m512 m[kPanelBlocks];         // Q4_1: row i's min
};

// Lanes [0, n) set.
inline __mmask16 FirstLanes(int n) { return static_cast<__mmask16>((1u << n) - 1); }

// Rows 0 .. n-1 of an fp16 matrix (row stride `stride` halves), columns 0 .. nb-1 (nb <= 32), as
// floats in panel order: out[b] lane i = h[i * stride + b]; lanes of missing rows are zero.
inline void LoadHalfColumns(const uint16_t* h, uint64_t stride, int n, uint64_t nb, __m512* out) {
  const __mmask32 cols = nb >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << nb) - 1);
  __m512i v[kPanelRows];
  for (int i = 0; i < kPanelRows; ++i) {
    v[i] = i < n ? _mm512_maskz_loadu_epi16(cols, h + i * stride) : _mm512_setzero_si512();
  }
  Transpose16(v);  // v[j] lane i: row i's columns 2j (low half) and 2j + 1 (high half)
  for (uint64_t j = 0; 2 * j < nb; ++j) {
    out[2 * j] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v[j]));
    if (2 * j + 1 < nb) out[2 * j + 1] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v[j], 16)));
  }
}

// dot[t] += kSteps panel steps (from `steps`) times token t's activations (at a + t * stride, four
// per step, broadcast), for TN tokens: each step's codes are loaded once for all of them.
template <int TN, int kSteps>
inline void DotSteps(const __m512i* steps, const int8_t* a, uint64_t stride, __m512i* dot) {
  for (int s = 0; s < kSteps; ++s) {
    const __m512i c = _mm512_load_si512(steps + s);
    for (int t = 0; t < TN; ++t) {
      int32_t four;
      __builtin_memcpy(&four, a + t * stride + 4 * s, sizeof(four));
      dot[t] = _mm512_dpbusd_epi32(dot[t], c, _mm512_set1_epi32(four));
    }
  }
}

// 64 packed bytes of each of n rows (at src, src + row_bytes, ...; lanes of missing rows zero) as
// panel steps: transposed first, so vector s, lane i holds row i's bytes 4s .. 4s+3, then each
// kBits-bit field j of those bytes (the row's columns 64j + 4s .. 64j + 4s + 3 in the Q4 and
// ternary layouts; with 8 bits, Q8_0's columns 4s .. 4s+3) stored as step 16j + s. Q8_0's signed
// codes become c = q + 128 by an xor with 0x80 after the transpose (bytes move whole).
template <int kBits>
inline void UnpackTransposed(const uint8_t* src, uint64_t row_bytes, int n, __m512i v[kPanelRows], __m512i* steps) {
  for (int i = 0; i < kPanelRows; ++i) v[i] = i < n ? _mm512_load_si512(src + i * row_bytes) : _mm512_setzero_si512();
  Transpose16(v);
  for (int s = 0; s < kPanelRows; ++s) {
    if constexpr (kBits == 8) {
      _mm512_store_si512(steps + s, _mm512_xor_si512(v[s], _mm512_set1_epi8(static_cast<char>(0x80))));
    } else {
      const __m512i mask = _mm512_set1_epi8((1 << kBits) - 1);
      for (int j = 0; j < 8 / kBits; ++j) {
        _mm512_store_si512(steps + 16 * j + s, _mm512_and_si512(_mm512_srli_epi16(v[s], kBits * j), mask));
      }
    }
  }
}

// Rows r .. r+n-1 (n <= 16; the other lanes are zero), columns [c0, c0 + nc) of w into p. nc: a
// multiple of 64 (Q8_0) or 128 (Q4).
template <Kind kKind>
void FillPanel(const WeightView& w, int64_t r, int n, uint64_t c0, uint64_t nc, Panel& p) {
  const uint64_t b0 = c0 / 32;
  LoadHalfColumns(w.half_d + r * w.blocks + b0, w.blocks, n, nc / 32, p.d);
  if constexpr (kKind == Kind::kQ4_1) LoadHalfColumns(w.half_m + r * w.blocks + b0, w.blocks, n, nc / 32, p.m);
  const uint8_t* rows = w.data + r * w.row_bytes;
  __m512i v[kPanelRows];
  if constexpr (kKind == Kind::kQ8_0) {
    for (uint64_t j = 0; j < nc / 64; ++j) UnpackTransposed<8>(rows + c0 + 64 * j, w.row_bytes, n, v, p.codes + 16 * j);
  } else {
    // A 128-column group is 64 bytes: byte k holds column k (low nibble) and k + 64 (high).
    for (uint64_t g = 0; g < nc / 128; ++g) {
      UnpackTransposed<4>(rows + (c0 / 128 + g) * 64, w.row_bytes, n, v, p.codes + 32 * g);
    }
  }
}

// Tokens [t0, t0 + TN) against the panel of rows r .. r+15 (nb blocks from column c0): the
// partial sums stored into `out` (first panel of the row) or added to it.
template <Kind kKind, int TN>
void PanelTokens(const Panel& p, const WeightView& w, uint64_t nb, uint64_t c0, const ActView& x, int t0, bool first,
                 bool /*last*/, int64_t r, __mmask16 lanes, float* out) {
  const uint64_t n32 = x.stride / 32;
  const uint64_t b0 = c0 / 32;
  __m512 acc[TN];
  for (int t = 0; t < TN; ++t) acc[t] = _mm512_setzero_ps();
  for (uint64_t b = 0; b < nb; ++b) {
    __m512i dot[TN];
    for (int t = 0; t < TN; ++t) {
      dot[t] = _mm512_set1_epi32(-kZeroPoint<kKind> * x.sums[(t0 + t) * n32 + b0 + b]);
    }
    DotSteps<TN, 8>(p.codes + b * 8, x.q + t0 * x.stride + c0 + b * 32, x.stride, dot);
    for (int t = 0; t < TN; ++t) {
      const uint64_t tb = (t0 + t) * n32 + b0 + b;
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]), _mm512_mul_ps(p.d[b], _mm512_set1_ps(x.block_steps[tb])),
                               acc[t]);
      if constexpr (kKind == Kind::kQ4_1) acc[t] = _mm512_fmadd_ps(p.m[b], _mm512_set1_ps(x.scaled_sums[tb]), acc[t]);
    }
  }
  for (int t = 0; t < TN; ++t) {
    float* o = out + (t0 + t) * w.rows + r;
    _mm512_mask_storeu_ps(o, lanes, first ? acc[t] : _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, o), acc[t]));
  }
}

// Ternary rows r .. r+n-1 (the other lanes zero), columns [c0, c0 + nc) into p; nc: a multiple of
// 256. Block byte k holds columns k, k+64, k+128, k+192 at bits 0, 2, 4, 6. Per-block scales go to
// p.d (one vector per 256 columns); rows with one scale read theirs at the end instead.
template <Kind kKind>
void FillTernaryPanel(const WeightView& w, int64_t r, int n, uint64_t c0, uint64_t nc, Panel& p) {
  const uint64_t b0 = c0 / 256;
  if constexpr (kKind == Kind::kTernary) {
    const __m512i rows_idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(static_cast<int>(w.blocks)));
    for (uint64_t b = 0; b < nc / 256; ++b) {
      p.d[b] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), FirstLanes(n), rows_idx,
                                        w.scales + r * w.blocks + b0 + b, 4);
    }
  }
  __m512i v[kPanelRows];
  for (uint64_t g = 0; g < nc / 256; ++g) {
    UnpackTransposed<2>(w.data + r * w.row_bytes + (b0 + g) * 64, w.row_bytes, n, v, p.codes + 64 * g);
  }
}

// Tokens [t0, t0 + TN) against a ternary panel (nb 256-column blocks from column c0).
// Per-block scales: each block's sum less its activation sum, times the block's scales, is
// added up in floats. One scale per row: the integer sum over the panel less its activation
// sums, exact as a float. Either way the panel's result is added into `out` (stored by the first
// panel of the row); the last panel multiplies by the row scale (uniform) and the token's step.
template <Kind kKind, int TN>
void TernaryTokens(const Panel& p, const WeightView& w, uint64_t nb, uint64_t c0, const ActView& x, int t0,
                   bool first, bool last, int64_t r, __mmask16 lanes, float* out) {
  const uint64_t n256 = x.stride / 256;
  const uint64_t b0 = c0 / 256;
  __m512 acc[TN];
  __m512i dot[TN];
  for (int t = 0; t < TN; ++t) {
    acc[t] = _mm512_setzero_ps();
    dot[t] = _mm512_setzero_si512();
  }
  for (uint64_t b = 0; b < nb; ++b) {
    DotSteps<TN, 64>(p.codes + b * 64, x.q + t0 * x.stride + c0 + b * 256, x.stride, dot);
    for (int t = 0; t < TN; ++t) {
      // The block's activation sum: an exact integer held in a float (codes are w + 1).
      const int32_t sum = static_cast<int32_t>(x.sums256[(t0 + t) * n256 + b0 + b]);
      dot[t] = _mm512_sub_epi32(dot[t], _mm512_set1_epi32(sum));
      if constexpr (kKind == Kind::kTernary) {
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]), p.d[b], acc[t]);
        dot[t] = _mm512_setzero_si512();
      }
    }
  }
  const __m512 row_scale = kKind == Kind::kTernaryUniform ? _mm512_maskz_loadu_ps(lanes, w.row_scales + r)
                                                           : _mm512_set1_ps(1.0f);
  for (int t = 0; t < TN; ++t) {
    float* o = out + (t0 + t) * w.rows + r;
    __m512 y = kKind == Kind::kTernaryUniform ? _mm512_cvtepi32_ps(dot[t]) : acc[t];
    if (!first) y = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, o), y);
    if (last) {
      if constexpr (kKind == Kind::kTernaryUniform) y = _mm512_mul_ps(y, row_scale);
      y = _mm512_mul_ps(y, _mm512_set1_ps(x.absmax[t0 + t] / 127.0f));
    }
    _mm512_mask_storeu_ps(o, lanes, y);
  }
}

constexpr bool IsTernary(Kind kind) { return kind == Kind::kTernary || kind == Kind::kTernaryUniform; }

// One token tile of TN tokens against a panel of kKind.
template <Kind kKind, int TN>
void Tokens(const Panel& p, const WeightView& w, uint64_t nb, uint64_t c0, const ActView& x, int t0, bool first,
            bool last, int64_t r, __mmask16 lanes, float* out) {
  if constexpr (IsTernary(kKind)) {
    TernaryTokens<kKind, TN>(p, w, nb, c0, x, t0, first, last, r, lanes, out);
  } else {
    PanelTokens<kKind, TN>(p, w, nb, c0, x, t0, first, last, r, lanes, out);
  }
}

// The last token tile of a batch, by its token count (1 .. kPanelTokens - 1).
using TileFn = void (*)(const Panel&, const WeightView&, uint64_t, uint64_t, const ActView&, int, bool, bool, int64_t,
                        __mmask16, float*);
template <Kind kKind>
constexpr TileFn kLastTile[kPanelTokens] = {nullptr,         Tokens<kKind, 1>, Tokens<kKind, 2>, Tokens<kKind, 3>,
                                            Tokens<kKind, 4>, Tokens<kKind, 5>, Tokens<kKind, 6>, Tokens<kKind, 7>};

template <Kind kKind>
void PanelRows(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  // Columns per scale block; rows are padded to whole ternary blocks, whole Q4 groups, or an even
  // number of Q8_0 blocks, so every panel holds whole fill units.
  constexpr uint64_t kBlockCols = IsTernary(kKind) ? 256 : 32;
  const uint64_t cols = w.blocks * kBlockCols;
  Panel p;
  for (int64_t r = r0; r < r1; r += kPanelRows) {
    const int n = r1 - r < kPanelRows ? static_cast<int>(r1 - r) : kPanelRows;
    const __mmask16 lanes = FirstLanes(n);
    for (uint64_t c0 = 0; c0 < cols; c0 += kPanelCols) {
      const uint64_t nc = cols - c0 < kPanelCols ? cols - c0 : kPanelCols;
      if constexpr (IsTernary(kKind)) {
        FillTernaryPanel<kKind>(w, r, n, c0, nc, p);
      } else {
        FillPanel<kKind>(w, r, n, c0, nc, p);
      }
      const uint64_t nb = nc / kBlockCols;
      const bool first = c0 == 0;
      const bool last = c0 + nc == cols;
      int t0 = 0;
      for (; t0 + kPanelTokens <= x.n_tokens; t0 += kPanelTokens) {
        Tokens<kKind, kPanelTokens>(p, w, nb, c0, x, t0, first, last, r, lanes, out);
      }
      const int left = x.n_tokens - t0;  // 0 .. kPanelTokens - 1
      if (left > 0) kLastTile<kKind>[left](p, w, nb, c0, x, t0, first, last, r, lanes, out);
    }
  }
}

}  // namespace

void PanelMatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  PanelRows<Kind::kQ4_0>(w, r0, r1, x, out);
}
void PanelMatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  PanelRows<Kind::kQ4_1>(w, r0, r1, x, out);
}
void PanelMatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  PanelRows<Kind::kQ8_0>(w, r0, r1, x, out);
}
void PanelMatMulTernary(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (w.row_scales != nullptr) {
    PanelRows<Kind::kTernaryUniform>(w, r0, r1, x, out);
  } else {
    PanelRows<Kind::kTernary>(w, r0, r1, x, out);
  }
}

}  // namespace bitfleet::kernels::cpu::avx512

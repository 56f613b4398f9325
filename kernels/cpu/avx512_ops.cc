// AVX-512 activation quantization and elementwise helpers (same flags as avx512_matmul.cc;
// only intrinsics and internal-linkage helpers, see kernels/cpu/kernel_table.h).
#include <immintrin.h>

#include "kernels/cpu/arg_max_lanes.h"
#include "kernels/cpu/count_dispatch.h"
#include "kernels/cpu/avx512_exp.h"
#include "kernels/cpu/avx512_kv_rows.h"

#include "kernels/cpu/variant_fns.h"

namespace bitfleet::kernels::cpu::avx512 {
namespace {

inline __mmask16 TailMask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

// q = clamp(round_half_even(x * inv), ±127) as int32 lanes; NaN -> 0. cvtps_epi32 rounds with
// the MXCSR mode, which is round-to-nearest-even unless someone changed it (nobody does).
inline __m512i Quantize16(__m512 x, __m512 inv) {
  __m512 v = _mm512_mul_ps(x, inv);
  v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
  return _mm512_cvtps_epi32(v);
}


}  // namespace

float AbsMax(const float* x, uint64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  __m512 m = _mm512_setzero_ps();
  for (uint64_t i = 0; i < n; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(TailMask(static_cast<int64_t>(n - i)), x + i);
    m = _mm512_max_ps(m, _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask)));
  }
  return _mm512_reduce_max_ps(m);
}

void QuantizeRow(const float* x, uint64_t n, float inv_scale, int8_t* q, int32_t* sums) {
  const __m512 inv = _mm512_set1_ps(inv_scale);
  for (uint64_t i = 0; i < n; i += 32) {
    const int64_t left = static_cast<int64_t>(n - i);
    const __mmask16 m0 = TailMask(left);
    const __mmask16 m1 = TailMask(left - 16 > 0 ? left - 16 : 0);
    const __m512i q0 = Quantize16(_mm512_maskz_loadu_ps(m0, x + i), inv);
    const __m512i q1 = Quantize16(_mm512_maskz_loadu_ps(m1, x + i + 16), inv);
    _mm_mask_storeu_epi8(q + i, m0, _mm512_cvtsepi32_epi8(q0));
    _mm_mask_storeu_epi8(q + i + 16, m1, _mm512_cvtsepi32_epi8(q1));
    sums[i / 32] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  }
}

float SumSquares(const float* x, int64_t n) {
  __m512 a0 = _mm512_setzero_ps();
  __m512 a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 v0 = _mm512_loadu_ps(x + i);
    const __m512 v1 = _mm512_loadu_ps(x + i + 16);
    a0 = _mm512_fmadd_ps(v0, v0, a0);
    a1 = _mm512_fmadd_ps(v1, v1, a1);
  }
  for (; i < n; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(TailMask(n - i), x + i);
    a0 = _mm512_fmadd_ps(v, v, a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

void ScaleMul(const float* x, const float* w, float s, int64_t n, float* y) {
  const __m512 sv = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sv), _mm512_maskz_loadu_ps(m, w + i));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}

namespace {

// The 16-lane sums of four vectors at once (lane k: vector k's sum): one reduction tree shared
// by the four instead of four separate ones (a tile's 8 dot products cost as much to reduce
// one by one as to compute for a 128-dim head).
inline __m128 Sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  // [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7], the same for c, d; then
  // [a0..3, b0..3, c0..3, d0..3 | a4..7, b4..7, c4..7, d4..7].
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// out[k] = the 16-lane sum of v[k], k < N.
template <int N>
inline void HorizontalSums(const __m512* v, float* out) {
  int k = 0;
  for (; k + 4 <= N; k += 4) _mm_storeu_ps(out + k, Sum4(v[k], v[k + 1], v[k + 2], v[k + 3]));
  for (; k < N; ++k) out[k] = _mm512_reduce_add_ps(v[k]);
}

// Scores of NQ query heads against KJ consecutive keys: the KJ × NQ dot products are
// independent accumulator chains (a single chain per key would wait on FMA latency), and each
// key row is converted once for all NQ heads.
template <int NQ, int KJ, typename Rows>
inline void QkTile(const float* q, int hd, const Rows& k, int j, float scale, float* s, int s_stride) {
  __m512 acc[KJ][NQ];
  for (int jj = 0; jj < KJ; ++jj) {
    for (int i = 0; i < NQ; ++i) acc[jj][i] = _mm512_setzero_ps();
  }
  for (int d = 0; d < hd; d += 16) {
    const __mmask16 m = TailMask(hd - d);
    __m512 qv[NQ];
    for (int i = 0; i < NQ; ++i) qv[i] = _mm512_maskz_loadu_ps(m, q + i * hd + d);
    for (int jj = 0; jj < KJ; ++jj) {
      const __m512 kv = k.Load(j + jj, d, m);
      for (int i = 0; i < NQ; ++i) acc[jj][i] = _mm512_fmadd_ps(qv[i], kv, acc[jj][i]);
    }
  }
  float sums[KJ * NQ];
  HorizontalSums<KJ * NQ>(&acc[0][0], sums);
  for (int jj = 0; jj < KJ; ++jj) {
    for (int i = 0; i < NQ; ++i) s[i * s_stride + j + jj] = scale * sums[jj * NQ + i];
  }
}

// NQ heads' scores against all n_keys keys, four keys at a time (two for 3-4 heads: register
// budget), then the leftover keys one by one.
template <int NQ, typename Rows>
inline void QkPass(const float* q, int hd, const Rows& k, int n_keys, float scale, float* s, int s_stride) {
  constexpr int kKeys = NQ <= 2 ? 4 : 2;
  int j = 0;
  for (; j + kKeys <= n_keys; j += kKeys) QkTile<NQ, kKeys>(q, hd, k, j, scale, s, s_stride);
  for (; j < n_keys; ++j) QkTile<NQ, 1>(q, hd, k, j, scale, s, s_stride);
}

// acc (NQ heads × hd) += p × V over dims [d0, d0 + 16 D): the NQ × D accumulators stay in
// registers across all keys, each V row slice is converted once for the NQ heads, and the
// NQ × D FMAs per key are independent chains. `m` masks the last vector (head_dim tails).
template <int NQ, int D, typename Rows>
inline void PvSlab(const float* p, int p_stride, int n_keys, const Rows& v, int hd, int d0, __mmask16 m, float* acc) {
  __m512 a[NQ][D];
  for (int i = 0; i < NQ; ++i) {
    for (int x = 0; x < D; ++x) {
      const __mmask16 mx = x == D - 1 ? m : static_cast<__mmask16>(0xffff);
      a[i][x] = _mm512_maskz_loadu_ps(mx, acc + i * hd + d0 + 16 * x);
    }
  }
  for (int j = 0; j < n_keys; ++j) {
    __m512 vv[D];
    for (int x = 0; x < D; ++x) {
      const __mmask16 mx = x == D - 1 ? m : static_cast<__mmask16>(0xffff);
      vv[x] = v.Load(j, d0 + 16 * x, mx);
    }
    for (int i = 0; i < NQ; ++i) {
      const __m512 pj = _mm512_set1_ps(p[i * p_stride + j]);
      for (int x = 0; x < D; ++x) a[i][x] = _mm512_fmadd_ps(pj, vv[x], a[i][x]);
    }
  }
  for (int i = 0; i < NQ; ++i) {
    for (int x = 0; x < D; ++x) {
      const __mmask16 mx = x == D - 1 ? m : static_cast<__mmask16>(0xffff);
      _mm512_mask_storeu_ps(acc + i * hd + d0 + 16 * x, mx, a[i][x]);
    }
  }
}

// PvSlab<NQ, 4> over a whole 64-dim slab with the accumulators in Row4 structs. GCC 12
// kept PvSlab's array of accumulator vectors in memory and stored every one of them on every
// key (16 stores per key against 16 FMAs: the store port, not the FMAs, set the pace; an array
// of 8 did the same); small structs of named vectors stay in registers. Decode attention, one
// thread, in cache: 16x4x64 heads at 160 positions 13.2 -> 11.9 µs, 20x5x128 at 1024 205 ->
// 182 µs.
struct Row4 {  // one head's 64 accumulators
  __m512 x0, x1, x2, x3;
};

inline Row4 LoadRow4(const float* a) {
  return {_mm512_loadu_ps(a), _mm512_loadu_ps(a + 16), _mm512_loadu_ps(a + 32), _mm512_loadu_ps(a + 48)};
}

inline void StoreRow4(float* a, const Row4& r) {
  _mm512_storeu_ps(a, r.x0);
  _mm512_storeu_ps(a + 16, r.x1);
  _mm512_storeu_ps(a + 32, r.x2);
  _mm512_storeu_ps(a + 48, r.x3);
}

inline void FmaRow4(__m512 p, const Row4& v, Row4& r) {
  r.x0 = _mm512_fmadd_ps(p, v.x0, r.x0);
  r.x1 = _mm512_fmadd_ps(p, v.x1, r.x1);
  r.x2 = _mm512_fmadd_ps(p, v.x2, r.x2);
  r.x3 = _mm512_fmadd_ps(p, v.x3, r.x3);
}

// NQ (1..4) heads' accumulators over one whole 64-dim slab; the heads past NQ are not touched.
template <int NQ, typename Rows>
inline void PvSlabRows64(const float* p, int p_stride, int n_keys, const Rows& v, int hd, int d0, float* acc) {
  static_assert(NQ >= 1 && NQ <= 4);
  float* a0 = acc + d0;
  float* a1 = acc + (NQ > 1 ? hd : 0) + d0;
  float* a2 = acc + (NQ > 2 ? 2 * hd : 0) + d0;
  float* a3 = acc + (NQ > 3 ? 3 * hd : 0) + d0;
  Row4 c0 = LoadRow4(a0), c1 = LoadRow4(a1), c2 = LoadRow4(a2), c3 = LoadRow4(a3);
  for (int j = 0; j < n_keys; ++j) {
    const Row4 vr{v.Load16(j, d0), v.Load16(j, d0 + 16), v.Load16(j, d0 + 32), v.Load16(j, d0 + 48)};
    FmaRow4(_mm512_set1_ps(p[j]), vr, c0);
    if (NQ > 1) FmaRow4(_mm512_set1_ps(p[p_stride + j]), vr, c1);
    if (NQ > 2) FmaRow4(_mm512_set1_ps(p[2 * p_stride + j]), vr, c2);
    if (NQ > 3) FmaRow4(_mm512_set1_ps(p[3 * p_stride + j]), vr, c3);
  }
  StoreRow4(a0, c0);
  if (NQ > 1) StoreRow4(a1, c1);
  if (NQ > 2) StoreRow4(a2, c2);
  if (NQ > 3) StoreRow4(a3, c3);
}

// All of head_dim for NQ heads, in slabs of up to 64 dims (4 vectors: NQ × 4 accumulators and
// 4 V vectors fit the 32 registers for NQ <= 4).
template <int NQ, typename Rows>
inline void PvPass(const float* p, int p_stride, int n_keys, const Rows& v, int hd, float* acc) {
  int d0 = 0;
  for (; d0 + 64 <= hd; d0 += 64) PvSlabRows64<NQ>(p, p_stride, n_keys, v, hd, d0, acc);
  const int left = hd - d0;
  if (left <= 0) return;
  const __mmask16 m = TailMask(left - (left - 1) / 16 * 16);
  switch ((left + 15) / 16) {
    case 4:
      PvSlab<NQ, 4>(p, p_stride, n_keys, v, hd, d0, m, acc);
      break;
    case 3:
      PvSlab<NQ, 3>(p, p_stride, n_keys, v, hd, d0, m, acc);
      break;
    case 2:
      PvSlab<NQ, 2>(p, p_stride, n_keys, v, hd, d0, m, acc);
      break;
    default:
      PvSlab<NQ, 1>(p, p_stride, n_keys, v, hd, d0, m, acc);
      break;
  }
}

// Both sources of rows through the same passes (four heads at a time).
template <typename Rows>
void Qk(const float* q, int nq, int hd, const Rows& k, int n_keys, float scale, float* s) {
  for (int i0 = 0; i0 < nq; i0 += 4) {
    const float* qi = q + i0 * hd;
    float* si = s + i0 * n_keys;
    WithCountUpTo4(nq - i0, [&](auto rows) { QkPass<decltype(rows)::value>(qi, hd, k, n_keys, scale, si, n_keys); });
  }
}

template <typename Rows>
void Pv(const float* p, int nq, int n_keys, const Rows& v, int hd, float* acc) {
  for (int i0 = 0; i0 < nq; i0 += 4) {
    const float* pi = p + i0 * n_keys;
    float* ai = acc + i0 * hd;
    WithCountUpTo4(nq - i0, [&](auto rows) { PvPass<decltype(rows)::value>(pi, n_keys, n_keys, v, hd, ai); });
  }
}

}  // namespace

void QkF16(const float* q, int nq, int hd, const uint16_t* k, int64_t k_stride, int n_keys, float scale, float* s) {
  Qk(q, nq, hd, HalfRows{k, k_stride}, n_keys, scale, s);
}

void PvF16(const float* p, int nq, int n_keys, const uint16_t* v, int64_t v_stride, int hd, float* acc) {
  Pv(p, nq, n_keys, HalfRows{v, v_stride}, hd, acc);
}

void QkI8(const float* q, int nq, int hd, const int8_t* k, const float* k_steps, int64_t k_stride, int group,
          int n_keys, float scale, float* s) {
  Qk(q, nq, hd, Int8Rows(k, k_steps, k_stride, group, hd), n_keys, scale, s);
}

void PvI8(const float* p, int nq, int n_keys, const int8_t* v, const float* v_steps, int64_t v_stride, int group,
          int hd, float* acc) {
  Pv(p, nq, n_keys, Int8Rows(v, v_steps, v_stride, group, hd), hd, acc);
}

void F32ToF16(const float* x, int64_t n, uint16_t* y) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(y + i, m, h);
  }
}

void DequantI8F16(const int8_t* q, const float* steps, int64_t n, int group, uint16_t* y) {
  if (group % 16 != 0) {
    for (int64_t i = 0; i < n; ++i) {
      const float f = static_cast<float>(q[i]) * steps[i / group];
      y[i] = static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
    }
    return;
  }
  for (int64_t i = 0; i < n; i += 16) {  // a group holds whole vectors: one step per vector
    const __mmask16 m = TailMask(n - i);
    const __m512 codes = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q + i)));
    const __m512 f = _mm512_mul_ps(codes, _mm512_set1_ps(steps[i / group]));
    _mm256_mask_storeu_epi16(y + i, m, _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

float ExpShiftSum(float* x, int64_t n, float max) {
  const __m512 mv = _mm512_set1_ps(max);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

void Relu2Mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 r = _mm512_max_ps(_mm512_maskz_loadu_ps(m, gate + i), _mm512_setzero_ps());
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(r, r), _mm512_maskz_loadu_ps(m, up + i)));
  }
}

// Per lane the largest value seen and the lowest index holding it: a lane takes a value that is
// strictly greater (NaN compares false), or its first non-NaN value. Indices only grow, so
// equal values keep the earlier index. The 16 lanes are then reduced in index order.
int64_t ArgMax(const float* x, int64_t n) {
  __m512 best = _mm512_set1_ps(0.0f);
  __m512i best_i = _mm512_set1_epi32(-1);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __mmask16 empty = _mm512_cmplt_epi32_mask(best_i, _mm512_setzero_si512());
    const __mmask16 take = _mm512_mask_cmp_ps_mask(m, v, best, _CMP_GT_OQ) |
                           (_mm512_mask_cmp_ps_mask(m, v, v, _CMP_ORD_Q) & empty);
    best = _mm512_mask_mov_ps(best, take, v);
    best_i = _mm512_mask_mov_epi32(best_i, take, idx);
    idx = _mm512_add_epi32(idx, step);
  }
  alignas(64) float value[16];
  alignas(64) int32_t index[16];
  _mm512_store_ps(value, best);
  _mm512_store_si512(index, best_i);
  int64_t found = -1;
  float found_value = 0.0f;
  FoldArgMaxLanes(value, index, 16, &found, &found_value);
  return found < 0 ? 0 : found;
}

}  // namespace bitfleet::kernels::cpu::avx512

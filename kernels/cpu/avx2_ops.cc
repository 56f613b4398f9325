// AVX2 activation quantization and elementwise helpers (same flags as avx2_matmul.cc; only
// intrinsics and internal-linkage helpers, see kernels/cpu/kernel_table.h). Tails shorter than
// a vector go through a zero-padded stack copy so every element takes the same arithmetic.
#include <immintrin.h>

#include "kernels/cpu/arg_max_lanes.h"
#include "kernels/cpu/count_dispatch.h"
#include "kernels/cpu/kv_int8_rows.h"
#include "kernels/cpu/variant_fns.h"

namespace bitfleet::kernels::cpu::avx2 {
namespace {

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float Hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Copies n < 8 floats into a zeroed 8-float buffer.
inline __m256 LoadPartial(const float* x, int64_t n) {
  alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) buf[i] = x[i];
  return _mm256_load_ps(buf);
}

inline void StorePartial(float* y, __m256 v, int64_t n) {
  alignas(32) float buf[8];
  _mm256_store_ps(buf, v);
  for (int64_t i = 0; i < n; ++i) y[i] = buf[i];
}

// q = clamp(round_half_even(x * inv), ±127) as int32 lanes; NaN -> 0 (the ordered compare masks
// NaN to +0 before clamping). cvtps_epi32 rounds with MXCSR: round-to-nearest-even.
inline __m256i Quantize8(__m256 x, __m256 inv) {
  __m256 v = _mm256_mul_ps(x, inv);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
  return _mm256_cvtps_epi32(v);
}

// exp(x), relative error about 2e-7 (see avx512_ops.cc). x is clamped to [-87.3, 88.3] so 2^n
// stays a normal float: results below e^-87.3 come out as about 1e-38 instead of 0. x is the
// second operand of the clamps, which return it when either is NaN: exp(NaN) stays NaN.
inline __m256 Exp(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), _mm256_max_ps(_mm256_set1_ps(-87.3365447505531f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline float HalfToFloat1(uint16_t h) { return _cvtsh_ss(h); }

}  // namespace

float AbsMax(const float* x, uint64_t n) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
  if (i < n) m = _mm256_max_ps(m, _mm256_and_ps(LoadPartial(x + i, static_cast<int64_t>(n - i)), abs_mask));
  return Hmax(m);
}

void QuantizeRow(const float* x, uint64_t n, float inv_scale, int8_t* q, int32_t* sums) {
  const __m256 inv = _mm256_set1_ps(inv_scale);
  // vpackssdw / vpacksswb interleave 128-bit lanes; this permutation restores element order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (uint64_t i = 0; i < n; i += 32) {
    const int64_t left = static_cast<int64_t>(n - i);
    __m256i v[4];
    for (int j = 0; j < 4; ++j) {
      const int64_t part = left - 8 * j;
      const __m256 xv = part >= 8 ? _mm256_loadu_ps(x + i + 8 * j) : LoadPartial(x + i + 8 * j, part > 0 ? part : 0);
      v[j] = Quantize8(xv, inv);
    }
    const __m256i w16a = _mm256_packs_epi32(v[0], v[1]);
    const __m256i w16b = _mm256_packs_epi32(v[2], v[3]);
    const __m256i w8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w16a, w16b), order);
    if (left >= 32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), w8);
    } else {
      alignas(32) int8_t buf[32];
      _mm256_store_si256(reinterpret_cast<__m256i*>(buf), w8);
      for (int64_t k = 0; k < left; ++k) q[i + k] = buf[k];
    }
    sums[i / 32] = HsumI32(_mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3])));
  }
}

float SumSquares(const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps();
  __m256 a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i);
    const __m256 v1 = _mm256_loadu_ps(x + i + 8);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
  }
  for (; i < n; i += 8) {
    const __m256 v = n - i >= 8 ? _mm256_loadu_ps(x + i) : LoadPartial(x + i, n - i);
    a0 = _mm256_fmadd_ps(v, v, a0);
  }
  return Hsum(_mm256_add_ps(a0, a1));
}

void ScaleMul(const float* x, const float* w, float s, int64_t n, float* y) {
  const __m256 sv = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _mm256_loadu_ps(w + i)));
  }
  if (i < n) {
    StorePartial(y + i, _mm256_mul_ps(_mm256_mul_ps(LoadPartial(x + i, n - i), sv), LoadPartial(w + i, n - i)), n - i);
  }
}

namespace {

// Where QkPass / PvPass read K or V rows: an f16 cache's rows in place, or an int8 cache's codes
// converted as read into exactly the halves DequantI8F16 writes (code × step rounded to f16), so
// both give the same bits. Load8: 8 elements of row j from d (a multiple of 8); One: element e.
struct HalfRows {
  const uint16_t* base;
  int64_t stride;  // elements from one row to the next

  __m256 Load8(int64_t j, int d) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + j * stride + d)));
  }
  float One(int64_t j, int e) const { return HalfToFloat1(base[j * stride + e]); }
};

struct Int8Rows : Int8RowSteps {
  using Int8RowSteps::Int8RowSteps;

  __m256 Load8(int64_t j, int d) const {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(Codes(j, d)));
    const __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), _mm256_set1_ps(Step(j, d)));
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  float One(int64_t j, int e) const {
    const float x = static_cast<float>(*Codes(j, e)) * Step(j, e);
    const __m128i half = _mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT);
    return HalfToFloat1(static_cast<uint16_t>(_mm_extract_epi16(half, 0)));
  }
};

// Up to four query heads against each key: the key row is converted once per pass.
template <int NQ, typename Rows>
inline void QkPass(const float* q, int hd, const Rows& k, int n_keys, float scale, float* s, int s_stride) {
  for (int j = 0; j < n_keys; ++j) {
    __m256 acc[NQ];
    for (int i = 0; i < NQ; ++i) acc[i] = _mm256_setzero_ps();
    int d = 0;
    for (; d + 8 <= hd; d += 8) {
      const __m256 kv = k.Load8(j, d);
      for (int i = 0; i < NQ; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + i * hd + d), kv, acc[i]);
    }
    for (int i = 0; i < NQ; ++i) {
      float dot = Hsum(acc[i]);
      for (int e = d; e < hd; ++e) dot += q[i * hd + e] * k.One(j, e);
      s[i * s_stride + j] = scale * dot;
    }
  }
}

// Up to four heads' accumulators for 8 dims stay in registers across the keys.
template <int NQ, typename Rows>
inline void PvPass(const float* p, int p_stride, int n_keys, const Rows& v, int hd, float* acc) {
  int d = 0;
  for (; d + 8 <= hd; d += 8) {
    __m256 a[NQ];
    for (int i = 0; i < NQ; ++i) a[i] = _mm256_loadu_ps(acc + i * hd + d);
    for (int j = 0; j < n_keys; ++j) {
      const __m256 vv = v.Load8(j, d);
      for (int i = 0; i < NQ; ++i) a[i] = _mm256_fmadd_ps(_mm256_set1_ps(p[i * p_stride + j]), vv, a[i]);
    }
    for (int i = 0; i < NQ; ++i) _mm256_storeu_ps(acc + i * hd + d, a[i]);
  }
  for (; d < hd; ++d) {
    for (int j = 0; j < n_keys; ++j) {
      const float vj = v.One(j, d);
      for (int i = 0; i < NQ; ++i) acc[i * hd + d] += p[i * p_stride + j] * vj;
    }
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
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
  }
  if (i < n) {
    alignas(16) uint16_t buf[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(buf),
                    _mm256_cvtps_ph(LoadPartial(x + i, n - i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (int64_t k = 0; k < n - i; ++k) y[i + k] = buf[k];
  }
}

void DequantI8F16(const int8_t* q, const float* steps, int64_t n, int group, uint16_t* y) {
  int64_t i = 0;
  if (group % 8 == 0) {  // a group holds whole vectors: one step per vector
    for (; i + 8 <= n; i += 8) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
      const __m256 codes = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
      const __m256 f = _mm256_mul_ps(codes, _mm256_set1_ps(steps[i / group]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                       _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
  for (; i < n; ++i) {
    const float f = static_cast<float>(q[i]) * steps[i / group];
    y[i] = static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
  }
}

float ExpShiftSum(float* x, int64_t n, float max) {
  const __m256 mv = _mm256_set1_ps(max);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float s = Hsum(sum);
  if (i < n) {
    alignas(32) float buf[8];
    _mm256_store_ps(buf, Exp(_mm256_sub_ps(LoadPartial(x + i, n - i), mv)));
    for (int64_t k = 0; k < n - i; ++k) s += (x[i + k] = buf[k]);
  }
  return s;
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t left = n - i;
    const __m256 g = left >= 8 ? _mm256_loadu_ps(gate + i) : LoadPartial(gate + i, left);
    const __m256 u = left >= 8 ? _mm256_loadu_ps(up + i) : LoadPartial(up + i, left);
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, Exp(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    const __m256 v = _mm256_mul_ps(silu, u);
    if (left >= 8) {
      _mm256_storeu_ps(out + i, v);
    } else {
      StorePartial(out + i, v, left);
    }
  }
}

void Relu2Mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t left = n - i;
    const __m256 g = left >= 8 ? _mm256_loadu_ps(gate + i) : LoadPartial(gate + i, left);
    const __m256 u = left >= 8 ? _mm256_loadu_ps(up + i) : LoadPartial(up + i, left);
    const __m256 r = _mm256_max_ps(g, _mm256_setzero_ps());
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(r, r), u);
    if (left >= 8) {
      _mm256_storeu_ps(out + i, v);
    } else {
      StorePartial(out + i, v, left);
    }
  }
}

// As the AVX-512 ArgMax, 8 lanes over whole vectors; the tail (indices above every lane's) is
// folded in by the same rule after the lanes are reduced.
int64_t ArgMax(const float* x, int64_t n) {
  __m256 best = _mm256_setzero_ps();
  __m256i best_i = _mm256_set1_epi32(-1);
  __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 empty = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setzero_si256(), best_i));
    const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),
                                     _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_ORD_Q), empty));
    best = _mm256_blendv_ps(best, v, take);
    best_i = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_i), _mm256_castsi256_ps(idx), take));
    idx = _mm256_add_epi32(idx, step);
  }
  alignas(32) float value[8];
  alignas(32) int32_t index[8];
  _mm256_store_ps(value, best);
  _mm256_store_si256(reinterpret_cast<__m256i*>(index), best_i);
  int64_t found = -1;
  float found_value = 0.0f;
  FoldArgMaxLanes(value, index, 8, &found, &found_value);
  for (; i < n; ++i) {
    if (x[i] != x[i]) continue;
    if (found < 0 || x[i] > found_value) {
      found = i;
      found_value = x[i];
    }
  }
  return found < 0 ? 0 : found;
}

}  // namespace bitfleet::kernels::cpu::avx2

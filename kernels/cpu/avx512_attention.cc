// AVX-512 prefill attention over one run of cached positions for many query rows at once (same
// flags as avx512_ops.cc; only intrinsics and internal-linkage helpers, see
// kernels/cpu/kernel_table.h).
//
// The per-token path (qk_f16 / pv_f16) takes each score as a dot product along head_dim, one
// horizontal sum per (head, key), and converts every K and V row again for every query token.
// Here a run's K rows are converted and transposed once (kt[d][key]), so the 16 scores of a
// query row are one vector built by head_dim broadcast FMAs, and its V rows are converted once
// for all the rows of the tile: prefill's query tokens share every key they all see.
#include <immintrin.h>

#include "kernels/cpu/avx512_exp.h"
#include "kernels/cpu/avx512_kv_rows.h"
#include "kernels/cpu/avx512_transpose.h"
#include "kernels/cpu/variant_fns.h"

namespace bitfleet::kernels::cpu::avx512 {
namespace {

constexpr int kRunKeys = 16;
constexpr int kMaxHeadDim = 256;

inline __mmask16 FirstLanes(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1);
}

// Scores of four query rows (q0..q3, hd floats each) against the run: four independent chains
// of hd broadcast FMAs over kt (hd rows of 16 keys).
struct Scores4 {
  __m512 s0, s1, s2, s3;
};

inline Scores4 ScoreFour(const float* q0, const float* q1, const float* q2, const float* q3, const float* kt, int hd) {
  Scores4 s{_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int d = 0; d < hd; ++d) {
    const __m512 kd = _mm512_load_ps(kt + d * kRunKeys);
    s.s0 = _mm512_fmadd_ps(_mm512_set1_ps(q0[d]), kd, s.s0);
    s.s1 = _mm512_fmadd_ps(_mm512_set1_ps(q1[d]), kd, s.s1);
    s.s2 = _mm512_fmadd_ps(_mm512_set1_ps(q2[d]), kd, s.s2);
    s.s3 = _mm512_fmadd_ps(_mm512_set1_ps(q3[d]), kd, s.s3);
  }
  return s;
}

// The online-softmax update of one row from its raw scores s (keys visible: the first
// `visible` lanes): the running max, sum and accumulator are rescaled when the max grows, and
// the row's probabilities are left in p (zero past `visible`).
inline void FoldScores(__m512 s, int visible, float scale, int hd, float* m, float* l, float* acc, float* p) {
  const __mmask16 mask = FirstLanes(visible);
  s = _mm512_mul_ps(s, _mm512_set1_ps(scale));
  const float run_max = _mm512_mask_reduce_max_ps(mask, s);
  if (run_max > *m) {
    const float f = _mm512_cvtss_f32(Exp16(_mm512_set1_ps(*m - run_max)));  // 0 on the first run
    *l *= f;
    const __m512 fv = _mm512_set1_ps(f);
    for (int d = 0; d < hd; d += 16) _mm512_storeu_ps(acc + d, _mm512_mul_ps(_mm512_loadu_ps(acc + d), fv));
    *m = run_max;
  }
  const __m512 e = _mm512_maskz_mov_ps(mask, Exp16(_mm512_sub_ps(s, _mm512_set1_ps(*m))));
  *l += _mm512_reduce_add_ps(e);
  _mm512_store_ps(p, e);
}

// acc rows r0..r0 + 3 (hd apart) += p rows (16 probabilities each) · vf (16 keys × hd), 64
// dims at a time with the 16 accumulators named (an array of them would live in memory).
struct Acc4 {
  __m512 x0, x1, x2, x3;
};

inline Acc4 LoadAcc4(const float* a, __mmask16 m1, __mmask16 m2, __mmask16 m3) {
  return {_mm512_loadu_ps(a), _mm512_maskz_loadu_ps(m1, a + 16), _mm512_maskz_loadu_ps(m2, a + 32),
          _mm512_maskz_loadu_ps(m3, a + 48)};
}

inline void StoreAcc4(float* a, const Acc4& x, __mmask16 m1, __mmask16 m2, __mmask16 m3) {
  _mm512_storeu_ps(a, x.x0);
  _mm512_mask_storeu_ps(a + 16, m1, x.x1);
  _mm512_mask_storeu_ps(a + 32, m2, x.x2);
  _mm512_mask_storeu_ps(a + 48, m3, x.x3);
}

inline void FmaAcc4(__m512 p, __m512 v0, __m512 v1, __m512 v2, __m512 v3, Acc4& x) {
  x.x0 = _mm512_fmadd_ps(p, v0, x.x0);
  x.x1 = _mm512_fmadd_ps(p, v1, x.x1);
  x.x2 = _mm512_fmadd_ps(p, v2, x.x2);
  x.x3 = _mm512_fmadd_ps(p, v3, x.x3);
}

// Rows beyond `rows` (1..4) read row 0's accumulators and probabilities and are not stored.
inline void AccumulateFour(const float* p, int rows, const float* vf, int hd, int n_keys, float* acc) {
  float* a[4];
  const float* pr[4];
  for (int i = 0; i < 4; ++i) {
    a[i] = acc + (i < rows ? i : 0) * hd;
    pr[i] = p + (i < rows ? i : 0) * kRunKeys;
  }
  for (int d0 = 0; d0 < hd; d0 += 64) {
    // Dims d0 .. d0 + 63 exist in whole 16-lane chunks (hd % 16 == 0).
    const int chunks = (hd - d0) / 16;
    const __mmask16 m1 = chunks > 1 ? 0xffff : 0, m2 = chunks > 2 ? 0xffff : 0, m3 = chunks > 3 ? 0xffff : 0;
    Acc4 c0 = LoadAcc4(a[0] + d0, m1, m2, m3), c1 = LoadAcc4(a[1] + d0, m1, m2, m3);
    Acc4 c2 = LoadAcc4(a[2] + d0, m1, m2, m3), c3 = LoadAcc4(a[3] + d0, m1, m2, m3);
    for (int j = 0; j < n_keys; ++j) {
      const float* vj = vf + j * hd + d0;
      const __m512 v0 = _mm512_loadu_ps(vj), v1 = _mm512_maskz_loadu_ps(m1, vj + 16);
      const __m512 v2 = _mm512_maskz_loadu_ps(m2, vj + 32), v3 = _mm512_maskz_loadu_ps(m3, vj + 48);
      FmaAcc4(_mm512_set1_ps(pr[0][j]), v0, v1, v2, v3, c0);
      FmaAcc4(_mm512_set1_ps(pr[1][j]), v0, v1, v2, v3, c1);
      FmaAcc4(_mm512_set1_ps(pr[2][j]), v0, v1, v2, v3, c2);
      FmaAcc4(_mm512_set1_ps(pr[3][j]), v0, v1, v2, v3, c3);
    }
    StoreAcc4(a[0] + d0, c0, m1, m2, m3);
    if (rows > 1) StoreAcc4(a[1] + d0, c1, m1, m2, m3);
    if (rows > 2) StoreAcc4(a[2] + d0, c2, m1, m2, m3);
    if (rows > 3) StoreAcc4(a[3] + d0, c3, m1, m2, m3);
  }
}

// AttendRun over rows of either source (avx512_kv_rows.h).
template <typename Rows>
void AttendRunOn(const float* q, int n_rows, int hd, const int32_t* limit, const Rows& k, const Rows& v, int j0,
                 int n_keys, float scale, float* m, float* l, float* acc) {
  alignas(64) float kt[kMaxHeadDim * kRunKeys];  // kt[d * 16 + j] = K[j][d]
  alignas(64) float vf[kRunKeys * kMaxHeadDim];  // vf[j * hd + d] = V[j][d]
  alignas(64) float p[4 * kRunKeys];
  for (int d = 0; d < hd; d += 16) {
    __m512i rows[16];
    for (int j = 0; j < 16; ++j) rows[j] = j < n_keys ? _mm512_castps_si512(k.Load16(j, d)) : _mm512_setzero_si512();
    Transpose16(rows);
    for (int i = 0; i < 16; ++i) _mm512_store_si512(kt + (d + i) * kRunKeys, rows[i]);
  }
  for (int j = 0; j < n_keys; ++j) {
    for (int d = 0; d < hd; d += 16) _mm512_store_ps(vf + j * hd + d, v.Load16(j, d));
  }
  for (int r0 = 0; r0 < n_rows; r0 += 4) {
    const int rows = n_rows - r0 < 4 ? n_rows - r0 : 4;
    const float* qr[4];
    for (int i = 0; i < 4; ++i) qr[i] = q + (r0 + (i < rows ? i : 0)) * hd;
    const Scores4 s = ScoreFour(qr[0], qr[1], qr[2], qr[3], kt, hd);
    const __m512 si[4] = {s.s0, s.s1, s.s2, s.s3};
    int active = 0;  // rows of this group that see any key of the run
    for (int i = 0; i < rows; ++i) {
      const int r = r0 + i;
      int visible = limit[r] - j0;
      if (visible > n_keys) visible = n_keys;
      if (visible <= 0) {
        _mm512_store_ps(p + i * kRunKeys, _mm512_setzero_ps());
        continue;
      }
      FoldScores(si[i], visible, scale, hd, m + r, l + r, acc + r * hd, p + i * kRunKeys);
      ++active;
    }
    if (active > 0) AccumulateFour(p, rows, vf, hd, n_keys, acc + r0 * hd);
  }
}

}  // namespace

void AttendRun(const float* q, int n_rows, int hd, const int32_t* limit, const uint16_t* k, const uint16_t* v,
               int64_t kv_stride, int j0, int n_keys, float scale, float* m, float* l, float* acc) {
  AttendRunOn(q, n_rows, hd, limit, HalfRows{k, kv_stride}, HalfRows{v, kv_stride}, j0, n_keys, scale, m, l, acc);
}

void AttendRunI8(const float* q, int n_rows, int hd, const int32_t* limit, const int8_t* k, const float* k_steps,
                 const int8_t* v, const float* v_steps, int64_t kv_stride, int group, int j0, int n_keys, float scale,
                 float* m, float* l, float* acc) {
  const Int8Rows k_rows(k, k_steps, kv_stride, group, hd);
  const Int8Rows v_rows(v, v_steps, kv_stride, group, hd);
  AttendRunOn(q, n_rows, hd, limit, k_rows, v_rows, j0, n_keys, scale, m, l, acc);
}

}  // namespace bitfleet::kernels::cpu::avx512

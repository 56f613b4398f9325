// exp(x) over 16 floats, shared by the AVX-512 translation units (softmax, gating, prefill
// attention). Include only from files compiled with the AVX-512 flags: the function has internal
// linkage (static), so no other file's copy can stand in for it (see kernels/cpu/kernel_table.h
// on why SIMD code must not share inline functions by COMDAT).
#pragma once

#include <immintrin.h>

namespace bitfleet::kernels::cpu {

// exp(x), relative error about 2e-7: x = n ln2 + r with |r| <= ln2/2, a degree-7 Taylor
// polynomial for e^r, and scalef for 2^n (which underflows to 0 and overflows to inf cleanly).
static inline __m512 Exp16(__m512 x) {
  // x as the second operand: max/min return it when either is NaN, so exp(NaN) stays NaN (a NaN
  // score must poison the softmax as in the reference).
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace bitfleet::kernels::cpu

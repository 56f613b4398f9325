// A 16 x 16 transpose of 32-bit lanes in AVX-512 registers, shared by the AVX-512 and AMX
// translation units. Include only from files compiled with the AVX-512 flags: the function
// has internal linkage (static), so no other file's copy can stand in for it (see
// kernels/cpu/kernel_table.h on why SIMD code must not share inline functions by COMDAT).
#pragma once

#include <immintrin.h>

namespace bitfleet::kernels::cpu {

// In place: r[i] lane j <- r[j] lane i, for 16 vectors of 16 int32 (three stages: 32-bit and
// 64-bit interleaves within 128-bit lanes, then a 4 × 4 transpose of the lanes).
static inline void Transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  // u[c * 4 + g]: lane L holds column 4L + c of rows 4g .. 4g + 3.
  __m512i u[16];
  for (int g = 0; g < 4; ++g) {
    u[0 * 4 + g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[1 * 4 + g] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[2 * 4 + g] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[3 * 4 + g] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i* v = u + c * 4;
    const __m512i v0 = _mm512_shuffle_i32x4(v[0], v[1], 0x88);
    const __m512i v1 = _mm512_shuffle_i32x4(v[0], v[1], 0xDD);
    const __m512i v2 = _mm512_shuffle_i32x4(v[2], v[3], 0x88);
    const __m512i v3 = _mm512_shuffle_i32x4(v[2], v[3], 0xDD);
    r[0 * 4 + c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[2 * 4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    r[1 * 4 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[3 * 4 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

}  // namespace bitfleet::kernels::cpu

// Where the AVX-512 attention kernels read K or V rows from (avx512_ops.cc's per-token helpers,
// avx512_attention.cc's prefill runs): an f16 cache's rows in place, or an int8 cache's codes
// converted on the fly into exactly the halves DequantI8F16 writes (code × step rounded to f16,
// masked lanes +0), so that both sources give the same bits. Include only from files compiled
// with the AVX-512 flags: the types live in an anonymous namespace, so no other file's copy of
// their inline functions can stand in for them (kernels/cpu/kernel_table.h on COMDAT).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/kv_int8_rows.h"

namespace bitfleet::kernels::cpu {
namespace {

// Load: 16 elements of row j from element d (a multiple of 16), lanes outside m zero; Load16:
// all 16.
struct HalfRows {
  const uint16_t* base;
  int64_t stride;  // elements from one row to the next

  __m512 Load(int64_t j, int d, __mmask16 m) const {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, base + j * stride + d));
  }
  __m512 Load16(int64_t j, int d) const {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + j * stride + d)));
  }
};

struct Int8Rows : Int8RowSteps {
  using Int8RowSteps::Int8RowSteps;

  __m512 Convert(__m128i codes, int64_t j, int d, __mmask16 m) const {
    const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes));
    const __m512 x = _mm512_maskz_mul_ps(m, f, _mm512_set1_ps(Step(j, d)));
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  __m512 Load(int64_t j, int d, __mmask16 m) const { return Convert(_mm_maskz_loadu_epi8(m, Codes(j, d)), j, d, m); }
  __m512 Load16(int64_t j, int d) const {
    const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(Codes(j, d)));
    return Convert(codes, j, d, static_cast<__mmask16>(0xffff));
  }
};

}  // namespace
}  // namespace bitfleet::kernels::cpu

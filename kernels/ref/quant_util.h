// Small helpers shared by the reference codecs (internal to kernels/ref).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/fp16.h"

namespace bitfleet::kernels::ref::internal {

static_assert(std::endian::native == std::endian::little,
              "GGUF tensors are little-endian; the reference codecs copy fields as host bytes");

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof(v)); }

inline float LoadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void StoreF32(uint8_t* p, float v) { std::memcpy(p, &v, sizeof(v)); }

inline float LoadHalf(const uint8_t* p) { return HalfToFloat(LoadU16(p)); }
inline void StoreHalf(uint8_t* p, float v) { StoreU16(p, FloatToHalf(v)); }

// ggml converts floats to small integers with plain C casts ((int8_t)f, (int)lroundf(f)). For
// in-range values that is truncation (or rounding) and nothing else; out-of-range values (NaN or
// +-inf from 1/d overflowing for subnormal block maxima) are undefined in C, and on x86 the
// conversion instruction returns the "integer indefinite" value whose low bits are all zero. We
// define those cases as 0 so the reference is deterministic and matches x86 ggml byte for byte.
inline int32_t TruncToInt(float v) {
  if (!(std::fabs(v) < 2147483648.0f)) return 0;
  return static_cast<int32_t>(v);
}

// C `(int8_t)v` as ggml relies on it: truncate toward zero, keep the low 8 bits.
inline int8_t TruncToInt8(float v) { return static_cast<int8_t>(TruncToInt(v)); }

// C `(int)lroundf(v)`: round half away from zero.
inline int32_t RoundHalfAwayToInt(float v) { return TruncToInt(std::round(v)); }

}  // namespace bitfleet::kernels::ref::internal

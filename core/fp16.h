// IEEE half and bfloat16 conversions, bit-exact with llama.cpp's scalar paths (round to nearest
// even; NaN stays NaN).
#pragma once

#include <cstdint>
#include <cstring>

namespace bitfleet {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// float -> IEEE binary16, round to nearest even; overflow gives infinity.
uint16_t FloatToHalf(float f);
// IEEE binary16 -> float (exact).
float HalfToFloat(uint16_t h);

// float -> bfloat16, round to nearest even; NaN is kept quiet.
inline uint16_t FloatToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

inline float Bf16ToFloat(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

}  // namespace bitfleet

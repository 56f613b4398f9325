// Reference codecs for the ternary types: ggml's TQ1_0 and TQ2_0 (block scale d = max|x| as
// fp16, codes round(x / d) + 1) and bitnet.cpp's I2_S (sign codes, one fp32 scale per tensor).
#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/ref/quant_blocks.h"
#include "kernels/ref/quant_util.h"

namespace bitfleet::kernels::ref {
namespace {

using internal::LoadHalf;
using internal::RoundHalfAwayToInt;
using internal::StoreHalf;

// Block scale shared by TQ1_0 and TQ2_0: d = max|x|, codes from x * (1/d) (0 for an all-zero
// block, whose codes are then all 1 and decode to +0).
struct TernaryBlockScale {
  float d;
  float id;
};

template <size_t N>
TernaryBlockScale ComputeTernaryScale(std::span<const float, N> x) {
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  return {amax, amax != 0.0f ? 1.0f / amax : 0.0f};
}

// Code 0, 1 or 2 for -1, 0, +1, as ggml's lroundf(x * id) + 1 (|x * id| <= 1 up to one ulp).
inline int TernaryCode(float x, float id) { return RoundHalfAwayToInt(x * id) + 1; }

// ---- TQ1_0 base-3 packing ----
//
// Up to five trits t0..t4 (t0 most significant) form q = sum t_n * 3^(4-n) < 243, stored as
// ceil(q * 256 / 243): the byte is then a fixed-point fraction q / 243 of 256, and multiplying
// by 3^n (mod 256) shifts trit n to the top, where (b * 3) >> 8 reads it. This lets SIMD kernels
// decode with 8-bit multiplies instead of divisions.
constexpr std::array<uint8_t, 5> kPow3 = {1, 3, 9, 27, 81};

inline uint8_t PackTritsBase3(int q) { return static_cast<uint8_t>((q * 256 + 242) / 243); }

inline int UnpackTrit(uint8_t byte, size_t n) {
  const uint8_t shifted = static_cast<uint8_t>(byte * kPow3[n]);  // mod 256 on purpose
  return (shifted * 3) >> 8;
}

// Packs elements base + m + stride * n (n = 0..count-1, count <= 5) into one byte. With
// count == 4 the missing fifth trit is 0 (ggml multiplies q by 3 once more).
inline uint8_t PackGroup(const float* x, size_t base, size_t m, size_t stride, size_t count, float id) {
  int q = 0;
  for (size_t n = 0; n < 5; ++n) {
    q *= 3;
    if (n < count) q += TernaryCode(x[base + m + stride * n], id);
  }
  return PackTritsBase3(q);
}

// Where the 256 elements of a TQ1_0 block live: (first byte, first element, bytes, trits/byte).
// Within a segment, byte m holds elements first_elem + m + bytes * n.
struct Tq1Segment {
  size_t first_byte;
  size_t first_elem;
  size_t bytes;
  size_t trits;
};
constexpr std::array<Tq1Segment, 3> kTq1Segments = {{
    {kTq1_0QsOffset, 0, 32, 5},        // qs[0..31]:  elements 0..159
    {kTq1_0QsOffset + 32, 160, 16, 5},  // qs[32..47]: elements 160..239
    {kTq1_0QhOffset, 240, 4, 4},       // qh[0..3]:   elements 240..255
}};

}  // namespace

void QuantizeBlockTq1_0(std::span<const float, kTq1_0BlockElems> x, std::span<uint8_t, kTq1_0BlockBytes> block) {
  const TernaryBlockScale s = ComputeTernaryScale(x);
  for (const Tq1Segment& seg : kTq1Segments) {
    for (size_t m = 0; m < seg.bytes; ++m) {
      block[seg.first_byte + m] = PackGroup(x.data(), seg.first_elem, m, seg.bytes, seg.trits, s.id);
    }
  }
  StoreHalf(&block[kTq1_0ScaleOffset], s.d);
}

void DequantizeBlockTq1_0(std::span<const uint8_t, kTq1_0BlockBytes> block, std::span<float, kTq1_0BlockElems> y) {
  const float d = LoadHalf(&block[kTq1_0ScaleOffset]);
  for (const Tq1Segment& seg : kTq1Segments) {
    for (size_t m = 0; m < seg.bytes; ++m) {
      for (size_t n = 0; n < seg.trits; ++n) {
        const int trit = UnpackTrit(block[seg.first_byte + m], n);
        y[seg.first_elem + m + seg.bytes * n] = static_cast<float>(trit - 1) * d;
      }
    }
  }
}

void QuantizeBlockTq2_0(std::span<const float, kTq2_0BlockElems> x, std::span<uint8_t, kTq2_0BlockBytes> block) {
  const TernaryBlockScale s = ComputeTernaryScale(x);
  // Two 128-element halves; byte m of a half holds elements m + 32n at bits 2n (n = 0..3).
  for (size_t half = 0; half < 2; ++half) {
    for (size_t m = 0; m < 32; ++m) {
      uint8_t byte = 0;
      for (size_t n = 0; n < 4; ++n) {
        const int code = TernaryCode(x[half * 128 + m + 32 * n], s.id);
        byte = static_cast<uint8_t>(byte | ((code & 3) << (2 * n)));
      }
      block[kTq2_0QuantsOffset + half * 32 + m] = byte;
    }
  }
  StoreHalf(&block[kTq2_0ScaleOffset], s.d);
}

void DequantizeBlockTq2_0(std::span<const uint8_t, kTq2_0BlockBytes> block, std::span<float, kTq2_0BlockElems> y) {
  const float d = LoadHalf(&block[kTq2_0ScaleOffset]);
  for (size_t half = 0; half < 2; ++half) {
    for (size_t m = 0; m < 32; ++m) {
      const uint8_t byte = block[kTq2_0QuantsOffset + half * 32 + m];
      for (size_t n = 0; n < 4; ++n) {
        // Code 3 is never written; ggml decodes it as +2 * d, and so do we.
        const int code = (byte >> (2 * n)) & 3;
        y[half * 128 + m + 32 * n] = static_cast<float>(code - 1) * d;
      }
    }
  }
}

void QuantizeBlockI2s(std::span<const float, kI2sBlockElems> x, std::span<uint8_t, kI2sBlockBytes> block) {
  for (size_t j = 0; j < kI2sBlockBytes; ++j) {
    uint8_t byte = 0;
    for (size_t g = 0; g < 4; ++g) {
      const float v = x[g * 32 + j];
      // bitnet.cpp compares in double against 1e-6 (a double constant).
      const uint8_t code = std::fabs(static_cast<double>(v)) < 1e-6 ? 1 : (v > 0.0f ? 2 : 0);
      byte = static_cast<uint8_t>(byte | (code << (6 - 2 * g)));
    }
    block[j] = byte;
  }
}

void DequantizeBlockI2s(std::span<const uint8_t, kI2sBlockBytes> block, float scale,
                        std::span<float, kI2sBlockElems> y) {
  static constexpr std::array<float, 4> kCodeValue = {-1.0f, 0.0f, 1.0f, 0.0f};
  for (size_t j = 0; j < kI2sBlockBytes; ++j) {
    for (size_t g = 0; g < 4; ++g) {
      y[g * 32 + j] = scale * kCodeValue[(block[j] >> (6 - 2 * g)) & 3];
    }
  }
}

}  // namespace bitfleet::kernels::ref

// Reference codecs for ggml's classic 32-element blocks: Q8_0, Q4_0, Q4_1.
//
// The arithmetic mirrors quantize_row_q8_0_ref / q4_0_ref / q4_1_ref step by step (fp32 scale
// and its fp32 reciprocal for the codes, the fp16-rounded scale only in the stored block), since
// any other order of operations gives different bytes for some inputs.
#include <algorithm>
#include <cfloat>
#include <cmath>

#include "kernels/ref/quant_blocks.h"
#include "kernels/ref/quant_util.h"

namespace bitfleet::kernels::ref {

using internal::LoadHalf;
using internal::StoreHalf;
using internal::TruncToInt8;

void QuantizeBlockQ8_0(std::span<const float, kQ8_0BlockElems> x, std::span<uint8_t, kQ8_0BlockBytes> block) {
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreHalf(&block[kQ8_0ScaleOffset], d);
  for (size_t j = 0; j < kQ8_0BlockElems; ++j) {
    // roundf: halves go away from zero. |x * id| <= 127 (up to one ulp), so no clamp is needed.
    const int8_t q = TruncToInt8(std::round(x[j] * id));
    block[kQ8_0QuantsOffset + j] = static_cast<uint8_t>(q);
  }
}

void DequantizeBlockQ8_0(std::span<const uint8_t, kQ8_0BlockBytes> block, std::span<float, kQ8_0BlockElems> y) {
  const float d = LoadHalf(&block[kQ8_0ScaleOffset]);
  for (size_t j = 0; j < kQ8_0BlockElems; ++j) {
    y[j] = static_cast<float>(static_cast<int8_t>(block[kQ8_0QuantsOffset + j])) * d;
  }
}

void QuantizeBlockQ4_0(std::span<const float, kQ4_0BlockElems> x, std::span<uint8_t, kQ4_0BlockBytes> block) {
  // The scale keeps the sign of the largest-magnitude element (the first one on ties), so that
  // element maps to code 0 (value -8 * d) and the asymmetric range [-8, 7] is used fully.
  float amax = 0.0f;
  float max = 0.0f;
  for (float v : x) {
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreHalf(&block[kQ4_0ScaleOffset], d);
  constexpr size_t kHalf = kQ4_0BlockElems / 2;
  for (size_t j = 0; j < kHalf; ++j) {
    // Truncating x*id + 8.5 rounds halves up; an element of magnitude amax and the opposite sign
    // would give 16, hence the clamp to 15.
    const uint8_t lo = static_cast<uint8_t>(std::min<int>(15, TruncToInt8(x[j] * id + 8.5f)));
    const uint8_t hi = static_cast<uint8_t>(std::min<int>(15, TruncToInt8(x[kHalf + j] * id + 8.5f)));
    block[kQ4_0QuantsOffset + j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

void DequantizeBlockQ4_0(std::span<const uint8_t, kQ4_0BlockBytes> block, std::span<float, kQ4_0BlockElems> y) {
  const float d = LoadHalf(&block[kQ4_0ScaleOffset]);
  constexpr size_t kHalf = kQ4_0BlockElems / 2;
  for (size_t j = 0; j < kHalf; ++j) {
    const uint8_t q = block[kQ4_0QuantsOffset + j];
    y[j] = static_cast<float>((q & 0x0F) - 8) * d;
    y[kHalf + j] = static_cast<float>((q >> 4) - 8) * d;
  }
}

void QuantizeBlockQ4_1(std::span<const float, kQ4_1BlockElems> x, std::span<uint8_t, kQ4_1BlockBytes> block) {
  float min = FLT_MAX;
  float max = -FLT_MAX;
  for (float v : x) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreHalf(&block[kQ4_1ScaleOffset], d);
  StoreHalf(&block[kQ4_1MinOffset], min);
  constexpr size_t kHalf = kQ4_1BlockElems / 2;
  for (size_t j = 0; j < kHalf; ++j) {
    const uint8_t lo = static_cast<uint8_t>(std::min<int>(15, TruncToInt8((x[j] - min) * id + 0.5f)));
    const uint8_t hi = static_cast<uint8_t>(std::min<int>(15, TruncToInt8((x[kHalf + j] - min) * id + 0.5f)));
    block[kQ4_1QuantsOffset + j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

void DequantizeBlockQ4_1(std::span<const uint8_t, kQ4_1BlockBytes> block, std::span<float, kQ4_1BlockElems> y) {
  const float d = LoadHalf(&block[kQ4_1ScaleOffset]);
  const float m = LoadHalf(&block[kQ4_1MinOffset]);
  constexpr size_t kHalf = kQ4_1BlockElems / 2;
  for (size_t j = 0; j < kHalf; ++j) {
    const uint8_t q = block[kQ4_1QuantsOffset + j];
    // Multiply, round, then add: this file is built with -ffp-contract=off so no FMA fuses them.
    y[j] = static_cast<float>(q & 0x0F) * d + m;
    y[kHalf + j] = static_cast<float>(q >> 4) * d + m;
  }
}

}  // namespace bitfleet::kernels::ref

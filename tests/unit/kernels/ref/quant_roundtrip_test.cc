// Round-trip error budgets on random data, per type. Budgets follow from each format's
// arithmetic: codes are chosen with the fp32 scale, values rebuilt with the fp16-rounded one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/fp16.h"
#include "gtest/gtest.h"
#include "kernels/ref/quant.h"
#include "tests/unit/kernels/ref/quant_test_util.h"

namespace bitfleet::kernels::ref {
namespace {

using ::bitfleet::kernels::ref::testing::Bits;
using ::bitfleet::kernels::ref::testing::Dequantize;
using ::bitfleet::kernels::ref::testing::Quantize;
using ::bitfleet::kernels::ref::testing::RandomNormal;

constexpr uint64_t kRow = 512;
constexpr size_t kElems = kRow * 6;

float RoundToHalf(float v) { return HalfToFloat(FloatToHalf(v)); }

float AbsMax(const float* x, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

TEST(QuantRoundTripTest, F32IsExact) {
  const std::vector<float> x = RandomNormal(kElems, 3.0f, 1);
  const std::vector<float> back = Dequantize(DType::kF32, Quantize(DType::kF32, x, kRow), kRow, kElems);
  for (size_t i = 0; i < kElems; ++i) ASSERT_EQ(Bits(back[i]), Bits(x[i])) << i;
}

TEST(QuantRoundTripTest, F16AndBf16RelativeError) {
  const std::vector<float> x = RandomNormal(kElems, 3.0f, 2);
  const std::vector<float> f16 = Dequantize(DType::kF16, Quantize(DType::kF16, x, kRow), kRow, kElems);
  const std::vector<float> bf16 = Dequantize(DType::kBF16, Quantize(DType::kBF16, x, kRow), kRow, kElems);
  for (size_t i = 0; i < kElems; ++i) {
    const float mag = std::fabs(x[i]);
    if (mag >= 6.2e-5f) {  // fp16 normal range: half an ulp is 2^-11 relative
      ASSERT_LE(std::fabs(f16[i] - x[i]), mag * 0x1p-11f) << i;
    } else {  // subnormal fp16: half the subnormal step
      ASSERT_LE(std::fabs(f16[i] - x[i]), 0x1p-25f) << i;
    }
    ASSERT_LE(std::fabs(bf16[i] - x[i]), mag * 0x1p-8f) << i;
  }
}

TEST(QuantRoundTripTest, Q8_0WithinHalfStep) {
  const std::vector<float> x = RandomNormal(kElems, 1.0f, 3);
  const std::vector<float> back = Dequantize(DType::kQ8_0, Quantize(DType::kQ8_0, x, kRow), kRow, kElems);
  for (size_t b = 0; b < kElems / 32; ++b) {
    const float d = AbsMax(&x[b * 32], 32) / 127.0f;
    const float dh = RoundToHalf(d);
    // Half a step, plus the scale's fp16 rounding times the largest code, plus float slack.
    const float budget = 0.5f * dh + 127.0f * std::fabs(d - dh) + 1e-6f;
    for (size_t j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(back[b * 32 + j] - x[b * 32 + j]), budget) << "block " << b << " elem " << j;
    }
  }
}

TEST(QuantRoundTripTest, Q4_0WithinHalfStepExceptClampedEnd) {
  const std::vector<float> x = RandomNormal(kElems, 1.0f, 4);
  const std::vector<float> back = Dequantize(DType::kQ4_0, Quantize(DType::kQ4_0, x, kRow), kRow, kElems);
  for (size_t b = 0; b < kElems / 32; ++b) {
    const float* blk = &x[b * 32];
    // d = (signed largest-magnitude value) / -8: levels -8d..7d, so values of the other sign
    // beyond 7.5 steps are clamped to level 7 (the format's asymmetric range).
    float max = 0.0f;
    for (size_t j = 0; j < 32; ++j) {
      if (std::fabs(max) < std::fabs(blk[j])) max = blk[j];
    }
    const float d = max / -8.0f;
    const float dh = RoundToHalf(d);
    for (size_t j = 0; j < 32; ++j) {
      const float steps = blk[j] / d;  // -8 .. 8
      const float budget = std::max(0.5f, steps - 7.0f) * std::fabs(dh) + 8.0f * std::fabs(d - dh) + 1e-6f;
      ASSERT_LE(std::fabs(back[b * 32 + j] - blk[j]), budget) << "block " << b << " elem " << j;
    }
  }
}

TEST(QuantRoundTripTest, Q4_1WithinHalfStep) {
  std::vector<float> x = RandomNormal(kElems, 1.0f, 5);
  for (float& v : x) v += 0.7f;  // asymmetric data, the case Q4_1's minimum is for
  const std::vector<float> back = Dequantize(DType::kQ4_1, Quantize(DType::kQ4_1, x, kRow), kRow, kElems);
  for (size_t b = 0; b < kElems / 32; ++b) {
    const float* blk = &x[b * 32];
    const float mn = *std::min_element(blk, blk + 32);
    const float mx = *std::max_element(blk, blk + 32);
    const float d = (mx - mn) / 15.0f;
    const float dh = RoundToHalf(d);
    const float budget = 0.5f * dh + 15.0f * std::fabs(d - dh) + std::fabs(mn - RoundToHalf(mn)) + 1e-6f;
    for (size_t j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(back[b * 32 + j] - blk[j]), budget) << "block " << b << " elem " << j;
    }
  }
}

// TQ1_0/TQ2_0 on arbitrary data: each value becomes the nearest of {-d, 0, +d}, d = max|x|.
TEST(QuantRoundTripTest, TernaryBlockTypesPickNearestLevel) {
  const std::vector<float> x = RandomNormal(kElems, 1.0f, 6);
  for (DType type : {DType::kTQ1_0, DType::kTQ2_0}) {
    const std::vector<float> back = Dequantize(type, Quantize(type, x, kRow), kRow, kElems);
    for (size_t b = 0; b < kElems / 256; ++b) {
      const float d = AbsMax(&x[b * 256], 256);
      const float dh = RoundToHalf(d);
      const float budget = 0.5f * d + std::fabs(d - dh) + 1e-7f;
      for (size_t j = 0; j < 256; ++j) {
        const float v = x[b * 256 + j];
        const float got = back[b * 256 + j];
        ASSERT_TRUE(got == 0.0f || got == dh || got == -dh) << DTypeName(type) << " " << got;
        ASSERT_LE(std::fabs(got - v), budget) << DTypeName(type) << " block " << b;
      }
    }
  }
}

// I2_S on arbitrary data keeps only the sign (bitnet.cpp's quantizer): +-scale, 0 below 1e-6.
TEST(QuantRoundTripTest, I2sKeepsSignsOnly) {
  std::vector<float> x = RandomNormal(kElems, 1.0f, 7);
  x[10] = 5e-7f;
  x[11] = -5e-7f;
  const float scale = AbsMax(x.data(), x.size());
  const std::vector<float> back = Dequantize(DType::kI2_S, Quantize(DType::kI2_S, x, kRow), kRow, kElems);
  for (size_t i = 0; i < kElems; ++i) {
    const float want = std::fabs(x[i]) < 1e-6f ? 0.0f : (x[i] > 0 ? scale : -scale);
    ASSERT_EQ(back[i], want) << i;
  }
}

}  // namespace
}  // namespace bitfleet::kernels::ref

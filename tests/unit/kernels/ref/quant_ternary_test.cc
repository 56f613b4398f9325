// The ternary identity property: ternary weights times one fp16-representable scale are held
// exactly by TQ1_0, TQ2_0 and I2_S, which dequantize them to bitwise identical floats, and
// re-quantizing the dequantized values reproduces the same bytes. Also checks the packed bytes
// against encoders written here directly from the layout description (docs/formats.md), and
// BitNet's absmean ternarization.
#include <cmath>
#include <cstdint>
#include <cstring>
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
using ::bitfleet::kernels::ref::testing::RandomTernary;

constexpr DType kTernaryTypes[] = {DType::kTQ1_0, DType::kTQ2_0, DType::kI2_S};

// Trit (-1, 0, +1) of each element of t * scale.
std::vector<int> Trits(const std::vector<float>& x) {
  std::vector<int> t(x.size());
  for (size_t i = 0; i < x.size(); ++i) t[i] = x[i] == 0.0f ? 0 : (x[i] > 0.0f ? 1 : -1);
  return t;
}

// ---- Encoders from the layout description, element by element. ----

std::vector<uint8_t> SpecTq2(const std::vector<int>& t, float d) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < t.size() / 256; ++b) {
    std::vector<uint8_t> block(66, 0);
    for (size_t e = 0; e < 256; ++e) {
      const size_t byte = (e / 128) * 32 + e % 32;
      const int shift = 2 * static_cast<int>((e % 128) / 32);
      block[byte] |= static_cast<uint8_t>((t[b * 256 + e] + 1) << shift);
    }
    const uint16_t h = FloatToHalf(d);
    block[64] = h & 0xFF;
    block[65] = h >> 8;
    out.insert(out.end(), block.begin(), block.end());
  }
  return out;
}

std::vector<uint8_t> SpecTq1(const std::vector<int>& t, float d) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < t.size() / 256; ++b) {
    std::vector<int> q(52, 0);  // base-3 value of each packed byte, trit n weighted 3^(4-n)
    for (size_t e = 0; e < 256; ++e) {
      size_t byte;
      int n;
      if (e < 160) {
        byte = e % 32, n = static_cast<int>(e / 32);
      } else if (e < 240) {
        byte = 32 + (e - 160) % 16, n = static_cast<int>((e - 160) / 16);
      } else {
        byte = 48 + (e - 240) % 4, n = static_cast<int>((e - 240) / 4);
      }
      q[byte] += (t[b * 256 + e] + 1) * static_cast<int>(std::pow(3, 4 - n));
    }
    std::vector<uint8_t> block(54, 0);
    for (size_t j = 0; j < 52; ++j) block[j] = static_cast<uint8_t>(std::ceil(q[j] * 256.0 / 243.0));
    const uint16_t h = FloatToHalf(d);
    block[52] = h & 0xFF;
    block[53] = h >> 8;
    out.insert(out.end(), block.begin(), block.end());
  }
  return out;
}

std::vector<uint8_t> SpecI2s(const std::vector<int>& t, float scale) {
  std::vector<uint8_t> out(t.size() / 4 + 32, 0);
  for (size_t e = 0; e < t.size(); ++e) {
    const size_t byte = (e / 128) * 32 + e % 32;
    const int shift = 6 - 2 * static_cast<int>((e % 128) / 32);
    out[byte] |= static_cast<uint8_t>((t[e] + 1) << shift);
  }
  std::memcpy(&out[t.size() / 4], &scale, 4);
  return out;
}

// Independent TQ1_0 decoding: invert the ceil by q = floor(byte * 243 / 256), then base-3 digits.
int SpecTq1Trit(uint8_t byte, int n) {
  const int q = byte * 243 / 256;
  return (q / static_cast<int>(std::pow(3, 4 - n))) % 3 - 1;
}

TEST(QuantTernaryTest, IdentityForTernaryTimesFp16Scale) {
  constexpr uint64_t kRow = 768;  // 3 TQ blocks, 6 I2_S blocks per row
  constexpr size_t kElems = kRow * 4;
  for (float raw_scale : {0.0123f, 1.0f, 3.7f, 2e-4f, 3e-5f /* fp16 subnormal */}) {
    const float scale = HalfToFloat(FloatToHalf(raw_scale));
    std::vector<float> x = RandomTernary(kElems, scale, 11);
    for (size_t i = 256; i < 512; ++i) x[i] = 0.0f;  // one all-zero TQ block (d = 0)
    SCOPED_TRACE(scale);

    std::vector<std::vector<float>> decoded;
    for (DType type : kTernaryTypes) {
      const std::vector<uint8_t> bytes = Quantize(type, x, kRow);
      const std::vector<float> back = Dequantize(type, bytes, kRow, kElems);
      for (size_t i = 0; i < kElems; ++i) {
        ASSERT_EQ(Bits(back[i]), Bits(x[i])) << DTypeName(type) << " element " << i;
      }
      EXPECT_EQ(Quantize(type, back, kRow), bytes) << DTypeName(type) << " re-quantization changed bytes";
      decoded.push_back(back);
    }
    EXPECT_EQ(decoded[0], decoded[1]);
    EXPECT_EQ(decoded[1], decoded[2]);
  }
}

TEST(QuantTernaryTest, BytesMatchLayoutSpec) {
  constexpr uint64_t kRow = 512;
  constexpr size_t kElems = kRow * 3;
  const float scale = 0.25f;
  const std::vector<float> x = RandomTernary(kElems, scale, 12);
  const std::vector<int> t = Trits(x);
  // Every TQ block of 256 random trits has a nonzero, so d = scale in each.
  EXPECT_EQ(Quantize(DType::kTQ2_0, x, kRow), SpecTq2(t, scale));
  EXPECT_EQ(Quantize(DType::kTQ1_0, x, kRow), SpecTq1(t, scale));
  EXPECT_EQ(Quantize(DType::kI2_S, x, kRow), SpecI2s(t, scale));

  const std::vector<uint8_t> tq1 = Quantize(DType::kTQ1_0, x, kRow);
  for (size_t b = 0; b < kElems / 256; ++b) {
    const uint8_t* block = &tq1[b * 54];
    for (size_t e = 0; e < 256; ++e) {
      int trit;
      if (e < 160) {
        trit = SpecTq1Trit(block[e % 32], static_cast<int>(e / 32));
      } else if (e < 240) {
        trit = SpecTq1Trit(block[32 + (e - 160) % 16], static_cast<int>((e - 160) / 16));
      } else {
        trit = SpecTq1Trit(block[48 + (e - 240) % 4], static_cast<int>((e - 240) / 4));
      }
      ASSERT_EQ(trit, t[b * 256 + e]) << "block " << b << " element " << e;
    }
  }
}

TEST(QuantTernaryTest, AbsmeanHandComputed) {
  // mean|w| = (0.1 + 0.5 + 2 + 0 + 0.3 + 0.7 + 0.4 + 0.0) / 8 = 0.5 (exact in fp16).
  const std::vector<float> w = {0.1f, -0.5f, 2.0f, 0.0f, -0.3f, 0.7f, 0.4f, 0.0f};
  std::vector<float> out(w.size());
  auto scale = QuantizeTernaryAbsmean(w, out);
  ASSERT_TRUE(scale.ok()) << scale.status();
  EXPECT_EQ(*scale, 0.5f);
  // w / 0.5 = 0.2, -1, 4, 0, -0.6, 1.4, 0.8, 0 -> 0, -1, 1, 0, -1, 1, 1, 0
  const std::vector<float> want = {0.0f, -0.5f, 0.5f, 0.0f, -0.5f, 0.5f, 0.5f, 0.0f};
  EXPECT_EQ(out, want);
  EXPECT_EQ(Bits(out[0]), 0u);  // +0, never -0
}

TEST(QuantTernaryTest, AbsmeanRoundsHalvesToEven) {
  // mean = 1.0; +-0.5 are exact ties and round to (+)0, where half-away rounding gives +-1.
  const std::vector<float> w = {0.5f, -0.5f, 1.5f, 1.5f};
  std::vector<float> out(w.size());
  auto scale = QuantizeTernaryAbsmean(w, out);
  ASSERT_TRUE(scale.ok()) << scale.status();
  EXPECT_EQ(*scale, 1.0f);
  EXPECT_EQ(out, (std::vector<float>{0.0f, 0.0f, 1.0f, 1.0f}));
  EXPECT_EQ(Bits(out[1]), 0u);
}

TEST(QuantTernaryTest, AbsmeanAllZeroUsesMinScale) {
  std::vector<float> w(64, 0.0f);
  auto scale = QuantizeTernaryAbsmean(w, w);  // in place
  ASSERT_TRUE(scale.ok()) << scale.status();
  EXPECT_EQ(*scale, HalfToFloat(FloatToHalf(1e-5f)));
  for (float v : w) EXPECT_EQ(Bits(v), 0u);
}

TEST(QuantTernaryTest, AbsmeanOutputIsHeldExactlyByAllTernaryTypes) {
  constexpr uint64_t kRow = 1024;
  constexpr size_t kElems = kRow * 3;
  const std::vector<float> w = RandomNormal(kElems, 0.02f, 13);
  std::vector<float> ternary(kElems);
  auto scale = QuantizeTernaryAbsmean(w, ternary);
  ASSERT_TRUE(scale.ok()) << scale.status();
  EXPECT_EQ(*scale, HalfToFloat(FloatToHalf(*scale)));
  for (float v : ternary) ASSERT_TRUE(v == 0.0f || v == *scale || v == -*scale) << v;
  for (DType type : kTernaryTypes) {
    const std::vector<float> back = Dequantize(type, Quantize(type, ternary, kRow), kRow, kElems);
    for (size_t i = 0; i < kElems; ++i) ASSERT_EQ(Bits(back[i]), Bits(ternary[i])) << DTypeName(type) << " " << i;
  }
}

TEST(QuantTernaryTest, AbsmeanWithoutFp16RoundingKeepsFp32Mean) {
  const std::vector<float> w = {0.1f, 0.2f, 0.3f, 0.4f};
  std::vector<float> out(w.size());
  auto scale = QuantizeTernaryAbsmean(w, out, {.fp16_scale = false});
  ASSERT_TRUE(scale.ok()) << scale.status();
  const double sum = double{0.1f} + double{0.2f} + double{0.3f} + double{0.4f};
  EXPECT_EQ(*scale, static_cast<float>(sum / 4));
}

}  // namespace
}  // namespace bitfleet::kernels::ref

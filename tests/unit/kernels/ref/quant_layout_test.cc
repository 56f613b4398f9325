// Hand-computed byte vectors for every format: each expected byte below is derived from the
// layout in docs/formats.md (ggml / bitnet.cpp), not from the code under test.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ref/quant.h"
#include "tests/unit/kernels/ref/quant_test_util.h"

namespace bitfleet::kernels::ref {
namespace {

using ::bitfleet::kernels::ref::testing::Dequantize;
using ::bitfleet::kernels::ref::testing::Quantize;

TEST(QuantLayoutTest, FloatFormatsAreLittleEndianIeee) {
  const std::vector<float> x = {1.0f, -2.5f};
  EXPECT_EQ(Quantize(DType::kF32, x, 2), (std::vector<uint8_t>{0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0}));
  EXPECT_EQ(Quantize(DType::kF16, x, 2), (std::vector<uint8_t>{0x00, 0x3C, 0x00, 0xC1}));
  EXPECT_EQ(Quantize(DType::kBF16, x, 2), (std::vector<uint8_t>{0x80, 0x3F, 0x20, 0xC0}));
  for (DType type : {DType::kF32, DType::kF16, DType::kBF16}) {
    EXPECT_EQ(Dequantize(type, Quantize(type, x, 2), 2, 2), x) << DTypeName(type);
  }
}

TEST(QuantLayoutTest, Q8_0UnitScaleRoundsHalvesAwayFromZero) {
  // amax = 127 gives d = 1 (fp16 0x3C00) and codes round(x).
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  x[0] = 127.0f;
  x[1] = -127.0f;
  x[2] = 2.5f;   // -> 3
  x[3] = -2.5f;  // -> -3
  x[4] = 0.49f;  // -> 0
  x[5] = 1.5f;   // -> 2
  x[6] = -0.5f;  // -> -1
  std::vector<uint8_t> want = {0x00, 0x3C, 0x7F, 0x81, 0x03, 0xFD, 0x00, 0x02, 0xFF};
  for (int j = 7; j < 32; ++j) want.push_back(static_cast<uint8_t>(j - 16));
  const std::vector<uint8_t> got = Quantize(DType::kQ8_0, x, 32);
  EXPECT_EQ(got, want);
  const std::vector<float> back = Dequantize(DType::kQ8_0, got, 32, 32);
  EXPECT_EQ(back[0], 127.0f);
  EXPECT_EQ(back[2], 3.0f);
  EXPECT_EQ(back[6], -1.0f);
  EXPECT_EQ(back[31], 15.0f);
}

TEST(QuantLayoutTest, Q8_0StoresFp16ScaleButCodesUseFp32Scale) {
  // d = 1/127: fp16 0x2008 (= 0.00787353515625). x = 1 still codes as 127, because the code
  // uses the fp32 reciprocal; dequantization then uses the fp16 scale.
  std::vector<float> x(32, 0.0f);
  x[0] = 1.0f;
  x[1] = -0.25f;  // -31.75 -> -32
  const std::vector<uint8_t> got = Quantize(DType::kQ8_0, x, 32);
  EXPECT_EQ(got[0], 0x08);
  EXPECT_EQ(got[1], 0x20);
  EXPECT_EQ(got[2], 127);
  EXPECT_EQ(got[3], 0xE0);
  const std::vector<float> back = Dequantize(DType::kQ8_0, got, 32, 32);
  EXPECT_EQ(back[0], 127.0f * 0.00787353515625f);
  EXPECT_EQ(back[1], -32.0f * 0.00787353515625f);
}

TEST(QuantLayoutTest, Q4_0NibbleOrderSignedScaleAndClamp) {
  // Largest magnitude is 8; the first such element (index 5, value -8) sets max = -8, so
  // d = max / -8 = 1 and code = trunc(x + 8.5), clamped to 15.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16 - 8);  // code j % 16
  x[0] = 0.5f;   // 9.0 -> 9
  x[1] = -0.5f;  // 8.0 -> 8
  x[2] = 7.4f;   // 15.9 -> 15
  x[3] = -7.6f;  // 0.9 -> 0
  x[5] = -8.0f;  // 0
  x[20] = 8.0f;  // 16.5 -> 16 -> clamped to 15
  std::vector<uint8_t> want = {0x00, 0x3C,
                               0x09,   // x[0]=9,  x[16]=0
                               0x18,   // x[1]=8,  x[17]=1
                               0x2F,   // x[2]=15, x[18]=2
                               0x30,   // x[3]=0,  x[19]=3
                               0xF4,   // x[4]=4,  x[20]=15
                               0x50};  // x[5]=0,  x[21]=5
  for (int j = 6; j < 16; ++j) want.push_back(static_cast<uint8_t>(j | (j << 4)));
  const std::vector<uint8_t> got = Quantize(DType::kQ4_0, x, 32);
  EXPECT_EQ(got, want);
  const std::vector<float> back = Dequantize(DType::kQ4_0, got, 32, 32);
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[5], -8.0f);
  EXPECT_EQ(back[20], 7.0f);  // the clamped element
}

TEST(QuantLayoutTest, Q4_0PositiveMaximumGivesNegativeScale) {
  std::vector<float> x(32, 0.0f);
  x[0] = 16.0f;   // d = 16 / -8 = -2 (fp16 0xC000); 16 * -0.5 + 8.5 = 0.5 -> 0
  x[1] = -14.0f;  // 7 + 8.5 -> 15
  const std::vector<uint8_t> got = Quantize(DType::kQ4_0, x, 32);
  EXPECT_EQ(got[0], 0x00);
  EXPECT_EQ(got[1], 0xC0);
  EXPECT_EQ(got[2], 0x80);  // x[0] code 0, x[16] = 0 -> code 8
  EXPECT_EQ(got[3], 0x8F);  // x[1] code 15
  EXPECT_EQ(got[4], 0x88);
  const std::vector<float> back = Dequantize(DType::kQ4_0, got, 32, 32);
  EXPECT_EQ(back[0], 16.0f);
  EXPECT_EQ(back[1], -14.0f);
  EXPECT_EQ(back[2], 0.0f);
}

TEST(QuantLayoutTest, Q4_1ScaleThenMinThenNibbles) {
  // min = -1, max = 14: d = 1, m = -1 (fp16 0xBC00), code = trunc(x + 1 + 0.5).
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16 - 1);  // code j % 16
  x[1] = 14.0f;  // 15.5 -> 15
  x[2] = 0.4f;   // 1.9 -> 1
  x[3] = 0.5f;   // 2.0 -> 2
  std::vector<uint8_t> want = {0x00, 0x3C, 0x00, 0xBC, 0x00, 0x1F, 0x21, 0x32};
  for (int j = 4; j < 16; ++j) want.push_back(static_cast<uint8_t>(j | (j << 4)));
  const std::vector<uint8_t> got = Quantize(DType::kQ4_1, x, 32);
  EXPECT_EQ(got, want);
  const std::vector<float> back = Dequantize(DType::kQ4_1, got, 32, 32);
  EXPECT_EQ(back[0], -1.0f);
  EXPECT_EQ(back[1], 14.0f);
  EXPECT_EQ(back[2], 0.0f);
  EXPECT_EQ(back[3], 1.0f);
}

TEST(QuantLayoutTest, Tq2_0CodePositions) {
  // An all-zero byte is codes 1,1,1,1 = 0x55. Element e sits in byte (e / 128) * 32 + e % 32
  // at bit 2 * ((e % 128) / 32).
  std::vector<float> x(256, 0.0f);
  x[0] = 0.5f;     // byte 0,  bits 0: code 2 -> 0x56
  x[33] = -0.5f;   // byte 1,  bits 2: code 0 -> 0x51
  x[130] = -0.5f;  // byte 34, bits 0: code 0 -> 0x54
  x[255] = 0.5f;   // byte 63, bits 6: code 2 -> 0x95
  std::vector<uint8_t> want(66, 0x55);
  want[0] = 0x56;
  want[1] = 0x51;
  want[34] = 0x54;
  want[63] = 0x95;
  want[64] = 0x00;  // d = 0.5 = fp16 0x3800, after the codes
  want[65] = 0x38;
  const std::vector<uint8_t> got = Quantize(DType::kTQ2_0, x, 256);
  EXPECT_EQ(got, want);
  EXPECT_EQ(Dequantize(DType::kTQ2_0, got, 256, 256), x);
}

TEST(QuantLayoutTest, Tq1_0Base3Packing) {
  // Five trits t0..t4 (t0 most significant) form q; the byte is ceil(q * 256 / 243).
  //   all zero, 5 trits: q = 11111_3 = 121 -> 128 (0x80)
  //   all zero, qh (4 trits then x3): q = 1111_3 * 3 = 120 -> 127 (0x7F)
  //   element 0 = +1:   qs[0]  trits 2,1,1,1,1 -> q = 202 -> 213 (0xD5)
  //   element 100 = +1: 100 = 4 + 32*3 -> qs[4] trit 3: 1,1,1,2,1 -> q = 124 -> 131 (0x83)
  //   element 170 = -1: 170 = 160 + 10 + 16*0 -> qs[42] trit 0: 0,1,1,1,1 -> q = 40 -> 43 (0x2B)
  //   element 250 = +1: 250 = 240 + 2 + 4*2 -> qh[2] trit 2: 1,1,2,1 -> q = 129 -> 136 (0x88)
  std::vector<float> x(256, 0.0f);
  x[0] = 1.0f;
  x[100] = 1.0f;
  x[170] = -1.0f;
  x[250] = 1.0f;
  std::vector<uint8_t> want(54, 0x80);
  for (int j = 48; j < 52; ++j) want[j] = 0x7F;
  want[0] = 0xD5;
  want[4] = 0x83;
  want[42] = 0x2B;
  want[50] = 0x88;
  want[52] = 0x00;  // d = 1.0 = fp16 0x3C00, after qs and qh
  want[53] = 0x3C;
  const std::vector<uint8_t> got = Quantize(DType::kTQ1_0, x, 256);
  EXPECT_EQ(got, want);
  EXPECT_EQ(Dequantize(DType::kTQ1_0, got, 256, 256), x);
}

TEST(QuantLayoutTest, TernaryAllZeroBlockHasZeroScale) {
  const std::vector<float> x(256, 0.0f);
  const std::vector<uint8_t> tq1 = Quantize(DType::kTQ1_0, x, 256);
  const std::vector<uint8_t> tq2 = Quantize(DType::kTQ2_0, x, 256);
  EXPECT_EQ(tq1[52], 0);
  EXPECT_EQ(tq1[53], 0);
  EXPECT_EQ(tq2[64], 0);
  EXPECT_EQ(tq2[65], 0);
  for (float v : Dequantize(DType::kTQ1_0, tq1, 256, 256)) EXPECT_EQ(testing::Bits(v), 0u);
  for (float v : Dequantize(DType::kTQ2_0, tq2, 256, 256)) EXPECT_EQ(testing::Bits(v), 0u);
}

TEST(QuantLayoutTest, I2sCodesAndTensorTail) {
  // Two rows of 128 (two blocks). Byte j holds elements j, j+32, j+64, j+96 at shifts 6,4,2,0;
  // code 1 (zero) everywhere gives 0x55. Scale = max|w| = 1.5 (0x3FC00000) in the tail.
  std::vector<float> x(256, 0.0f);
  x[0] = 1.5f;          // block 0 byte 0,  shift 6, code 2 -> 0x95
  x[33] = -1.5f;        // block 0 byte 1,  shift 4, code 0 -> 0x45
  x[127] = 1.5f;        // block 0 byte 31, shift 0, code 2 -> 0x56
  x[128 + 70] = -1.5f;  // block 1 byte 6,  shift 2, code 0 -> 0x51
  std::vector<uint8_t> want(64 + 32, 0x55);
  want[0] = 0x95;
  want[1] = 0x45;
  want[31] = 0x56;
  want[32 + 6] = 0x51;
  for (int j = 64; j < 96; ++j) want[j] = 0x00;
  want[66] = 0xC0;
  want[67] = 0x3F;
  const std::vector<uint8_t> got = Quantize(DType::kI2_S, x, 128);
  EXPECT_EQ(got, want);
  EXPECT_EQ(Dequantize(DType::kI2_S, got, 128, 256), x);
  auto scale = ReadI2sScale(got);
  ASSERT_TRUE(scale.ok()) << scale.status();
  EXPECT_EQ(*scale, 1.5f);
}

TEST(QuantLayoutTest, I2sCodeThreeDecodesAsZeroAndTq2CodeThreeAsTwo) {
  // Neither quantizer writes code 3, but files may contain it; decode it like the references.
  std::vector<uint8_t> i2s(32 + 32, 0xFF);
  for (int j = 32; j < 64; ++j) i2s[j] = 0;
  i2s[34] = 0x80;  // scale 4.0f = 0x40800000
  i2s[35] = 0x40;
  for (float v : Dequantize(DType::kI2_S, i2s, 128, 128)) EXPECT_EQ(v, 0.0f);
  std::vector<uint8_t> tq2(66, 0xFF);
  tq2[64] = 0x00;
  tq2[65] = 0x3C;
  for (float v : Dequantize(DType::kTQ2_0, tq2, 256, 256)) EXPECT_EQ(v, 2.0f);
}

}  // namespace
}  // namespace bitfleet::kernels::ref

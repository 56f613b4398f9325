// Bad sizes, unsupported types and non-finite input are rejected with a clear status, and the
// destination is left untouched.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/ref/quant.h"

namespace bitfleet::kernels::ref {
namespace {

using ::testing::HasSubstr;

std::string Message(const Status& s) { return std::string(s.message()); }

TEST(QuantErrorsTest, TensorDestinationSizeMustMatch) {
  const std::vector<float> x(512, 1.0f);
  std::vector<uint8_t> dst(2 * 66 + 1, 0xAB);  // one byte too many
  const Status s = QuantizeTensor(DType::kTQ2_0, x, 256, dst);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("tq2_0"));
  EXPECT_THAT(Message(s), HasSubstr("needs 132"));
  for (uint8_t b : dst) EXPECT_EQ(b, 0xAB);

  std::vector<uint8_t> i2s(512 / 4, 0);  // missing the 32-byte tail
  EXPECT_THAT(Message(QuantizeTensor(DType::kI2_S, x, 256, i2s)), HasSubstr("needs 160"));
}

TEST(QuantErrorsTest, TensorSourceSizeMustMatch) {
  const std::vector<uint8_t> src(34 * 2 - 1, 0);
  std::vector<float> dst(64);
  const Status s = DequantizeTensor(DType::kQ8_0, src, 32, dst);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("needs 68"));
}

TEST(QuantErrorsTest, RowsMustBeWholeBlocksAndTensorsWholeRows) {
  std::vector<float> x(96, 0.0f);
  std::vector<uint8_t> dst(1024);
  // 96 is not a multiple of TQ1_0's 256-element block.
  Status s = QuantizeTensor(DType::kTQ1_0, x, 96, dst);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("block"));
  // 96 elements are not a whole number of 64-element rows.
  s = QuantizeTensor(DType::kQ4_0, x, 64, dst);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("rows"));
  // Zero-length rows.
  s = QuantizeTensor(DType::kQ4_0, x, 0, dst);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> out(96);
  s = DequantizeTensor(DType::kTQ2_0, dst, 96, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantErrorsTest, RowFunctionsCheckSizesAndRejectI2s) {
  std::vector<float> x(64, 0.5f);
  std::vector<uint8_t> dst(36);
  EXPECT_TRUE(QuantizeRow(DType::kQ4_0, x, dst).ok());
  std::vector<uint8_t> short_dst(35);
  EXPECT_THAT(Message(QuantizeRow(DType::kQ4_0, x, short_dst)), HasSubstr("needs 36"));
  std::vector<float> odd(33);
  EXPECT_EQ(QuantizeRow(DType::kQ8_0, odd, dst).code(), absl::StatusCode::kInvalidArgument);

  std::vector<float> i2s_row(128);
  std::vector<uint8_t> i2s_bytes(32 + 32);
  Status s = QuantizeRow(DType::kI2_S, i2s_row, i2s_bytes);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("per tensor"));
  s = DequantizeRow(DType::kI2_S, i2s_bytes, i2s_row);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("per tensor"));
}

TEST(QuantErrorsTest, UnsupportedTypesAreUnimplemented) {
  std::vector<float> x(4);
  std::vector<uint8_t> dst(4);
  for (DType type : {DType::kI8, DType::kI16, DType::kI32, DType::kF64}) {
    const Status s = QuantizeTensor(type, x, 4, dst);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << DTypeName(type);
    EXPECT_EQ(DequantizeRow(type, dst, x).code(), absl::StatusCode::kUnimplemented) << DTypeName(type);
  }
}

TEST(QuantErrorsTest, NonFiniteInputRejectedForBlockTypesOnly) {
  std::vector<float> x(256, 1.0f);
  x[77] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> tq2(66);
  Status s = QuantizeTensor(DType::kTQ2_0, x, 256, tq2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("element 77 is NaN"));
  x[77] = -std::numeric_limits<float>::infinity();
  std::vector<uint8_t> q8(8 * 34);
  EXPECT_THAT(Message(QuantizeRow(DType::kQ8_0, x, q8)), HasSubstr("infinite"));
  // Float formats convert them (F16 keeps -inf).
  std::vector<uint8_t> f16(512);
  EXPECT_TRUE(QuantizeTensor(DType::kF16, x, 256, f16).ok());
  EXPECT_EQ(f16[2 * 77], 0x00);
  EXPECT_EQ(f16[2 * 77 + 1], 0xFC);
}

TEST(QuantErrorsTest, I2sHelpersCheckSizes) {
  std::vector<uint8_t> bytes(31);
  EXPECT_EQ(ReadI2sScale(bytes).status().code(), absl::StatusCode::kInvalidArgument);
  bytes.resize(33);
  EXPECT_EQ(ReadI2sScale(bytes).status().code(), absl::StatusCode::kInvalidArgument);
  // One code block and the tail, whose first four bytes are the scale.
  std::vector<uint8_t> tensor(64, 0);
  const float nan = std::nanf("");
  std::memcpy(&tensor[32], &nan, sizeof(nan));
  EXPECT_EQ(ReadI2sScale(tensor).status().code(), absl::StatusCode::kInvalidArgument);
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(&tensor[32], &inf, sizeof(inf));
  EXPECT_EQ(ReadI2sScale(tensor).status().code(), absl::StatusCode::kInvalidArgument);
  const float half = 0.5f;
  std::memcpy(&tensor[32], &half, sizeof(half));
  ASSERT_TRUE(ReadI2sScale(tensor).ok());
  EXPECT_EQ(*ReadI2sScale(tensor), 0.5f);
  std::vector<uint8_t> codes(32, 0x55);
  std::vector<float> out(100);
  EXPECT_EQ(DequantizeI2sCodes(codes, 1.0f, out).code(), absl::StatusCode::kInvalidArgument);
  out.resize(256);
  EXPECT_THAT(Message(DequantizeI2sCodes(codes, 1.0f, out)), HasSubstr("need 64"));
  out.resize(128);
  ASSERT_TRUE(DequantizeI2sCodes(codes, 2.0f, out).ok());
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(QuantErrorsTest, AbsmeanChecksInput) {
  std::vector<float> w = {1.0f, 2.0f};
  std::vector<float> out(3);
  EXPECT_EQ(QuantizeTernaryAbsmean(w, out).status().code(), absl::StatusCode::kInvalidArgument);
  out.resize(2);
  w[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(QuantizeTernaryAbsmean(w, out).status().code(), absl::StatusCode::kInvalidArgument);
  w = {1e6f, -1e6f};  // mean 1e6 does not fit an fp16 scale
  EXPECT_THAT(Message(QuantizeTernaryAbsmean(w, out).status()), HasSubstr("fp16"));
  EXPECT_TRUE(QuantizeTernaryAbsmean(w, out, {.fp16_scale = false}).ok());
  EXPECT_EQ(QuantizeTernaryAbsmean(w, out, {.fp16_scale = true, .min_scale = 0.0f}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::kernels::ref

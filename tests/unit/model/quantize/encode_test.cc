#include "model/quantize/encode.h"

#include <atomic>
#include <vector>

#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/ref/quant.h"
#include "model/quantize/type_policy.h"

namespace bitfleet::quantize {
namespace {

RowSource FromVector(const std::vector<float>& values, uint64_t row_elems, std::atomic<int>* calls = nullptr) {
  return [&values, row_elems, calls](uint64_t first_row, std::span<float> out) {
    if (calls != nullptr) ++*calls;
    std::copy_n(values.begin() + first_row * row_elems, out.size(), out.begin());
    return absl::OkStatus();
  };
}

TEST(SingleTernaryScaleTest, Cases) {
  EXPECT_EQ(SingleTernaryScale(std::vector<float>{0.5f, -0.5f, 0.0f, -0.0f}), 0.5f);
  EXPECT_EQ(SingleTernaryScale(std::vector<float>{0.0f, 0.0f}), 0.0f);
  EXPECT_EQ(SingleTernaryScale(std::vector<float>{}), 0.0f);
  EXPECT_FALSE(SingleTernaryScale(std::vector<float>{0.5f, 0.25f}).has_value());
  EXPECT_FALSE(SingleTernaryScale(std::vector<float>{0.5f, std::nanf("")}).has_value());
}

TEST(EncodeTensorTest, ChunkedEncodingEqualsWholeTensorEncoding) {
  const uint64_t row_elems = 256;
  const uint64_t rows = kEncodeChunkElems / row_elems + 3;  // more than one chunk
  std::vector<float> values(row_elems * rows);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>((i * 7919) % 1000) / 1000.0f - 0.5f;
  for (DType type : {DType::kQ8_0, DType::kF16}) {
    const uint64_t bytes = *TensorBytes(type, row_elems, values.size());
    std::vector<uint8_t> chunked(bytes), whole(bytes);
    std::atomic<int> calls = 0;
    ASSERT_TRUE(EncodeTensor(type, row_elems, rows, FromVector(values, row_elems, &calls), chunked, nullptr).ok());
    EXPECT_EQ(calls, 2);
    ASSERT_TRUE(kernels::ref::QuantizeTensor(type, values, row_elems, whole).ok());
    EXPECT_EQ(chunked, whole) << DTypeName(type);
  }
}

TEST(EncodeTensorTest, TernaryInputIsKeptAndOtherInputIsAbsmeanTernarized) {
  const uint64_t row_elems = 256, rows = 4;
  std::vector<float> ternary(row_elems * rows);
  for (size_t i = 0; i < ternary.size(); ++i) ternary[i] = 0.375f * static_cast<float>(static_cast<int>(i % 3) - 1);
  std::vector<float> ramp(row_elems * rows);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i % 17) - 8.0f;

  for (DType type : {DType::kTQ1_0, DType::kTQ2_0, DType::kI2_S}) {
    SCOPED_TRACE(DTypeName(type));
    std::vector<uint8_t> out(*TensorBytes(type, row_elems, ternary.size()));
    EncodeResult result;
    ASSERT_TRUE(EncodeTensor(type, row_elems, rows, FromVector(ternary, row_elems), out, &result).ok());
    EXPECT_FALSE(result.absmean_ternarized);
    EXPECT_EQ(result.ternary_scale, 0.375f);
    std::vector<float> back(ternary.size());
    ASSERT_TRUE(kernels::ref::DequantizeTensor(type, out, row_elems, back).ok());
    EXPECT_EQ(back, ternary);

    ASSERT_TRUE(EncodeTensor(type, row_elems, rows, FromVector(ramp, row_elems), out, &result).ok());
    EXPECT_TRUE(result.absmean_ternarized);
    ASSERT_TRUE(kernels::ref::DequantizeTensor(type, out, row_elems, back).ok());
    EXPECT_EQ(SingleTernaryScale(back), result.ternary_scale);
  }
}

TEST(EncodeTensorTest, WrongOutputSizeIsAnError) {
  std::vector<float> values(64, 1.0f);
  std::vector<uint8_t> out(10);
  EXPECT_EQ(EncodeTensor(DType::kQ8_0, 32, 2, FromVector(values, 32), out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TypePolicyTest, RolesAndFallbacks) {
  EXPECT_EQ(ClassifyTensor("blk.0.attn_norm.weight", 1), TensorRole::kVector);
  EXPECT_EQ(ClassifyTensor("token_embd.weight", 2), TensorRole::kEmbedding);
  EXPECT_EQ(ClassifyTensor("output.weight", 2), TensorRole::kOutput);
  EXPECT_EQ(ClassifyTensor("blk.0.ffn_up.weight", 2), TensorRole::kMatrix);
  EXPECT_EQ(ClassifyTensor("something", 3), TensorRole::kOther);

  const TypePolicy tq{DType::kTQ2_0, std::nullopt};
  EXPECT_EQ(ChooseType(tq, TensorRole::kVector, 256).type, DType::kF32);
  EXPECT_EQ(ChooseType(tq, TensorRole::kMatrix, 512).type, DType::kTQ2_0);
  EXPECT_EQ(ChooseType(tq, TensorRole::kEmbedding, 512).type, DType::kQ8_0);
  EXPECT_EQ(ChooseType(tq, TensorRole::kOutput, 512).type, DType::kQ8_0);
  EXPECT_EQ(ChooseType({DType::kTQ2_0, DType::kF16}, TensorRole::kOutput, 512).type, DType::kF16);
  EXPECT_EQ(DefaultEmbeddingType(DType::kTQ1_0), DType::kQ8_0);
  EXPECT_EQ(DefaultEmbeddingType(DType::kI2_S), DType::kQ8_0);
  EXPECT_EQ(DefaultEmbeddingType(DType::kQ4_0), DType::kQ4_0);
  // A row that is not whole Q8_0 blocks falls back to F16 like any other.
  EXPECT_EQ(ChooseType(tq, TensorRole::kEmbedding, 48).type, DType::kF16);
  const TypeChoice fallback = ChooseType(tq, TensorRole::kMatrix, 96);
  EXPECT_EQ(fallback.type, DType::kF16);
  EXPECT_EQ(fallback.fallback_reason, "row of 96 elements is not a multiple of the tq2_0 block (256)");
  EXPECT_EQ(ChooseType({DType::kI2_S, std::nullopt}, TensorRole::kMatrix, 384).type, DType::kI2_S);
  EXPECT_EQ(ChooseType({DType::kQ4_0, std::nullopt}, TensorRole::kOutput, 64).type, DType::kQ4_0);
  EXPECT_EQ(ChooseType({DType::kQ4_0, DType::kQ8_0}, TensorRole::kEmbedding, 64).type, DType::kQ8_0);
  EXPECT_EQ(ChooseType({DType::kQ4_0, std::nullopt}, TensorRole::kMatrix, 48).type, DType::kF16);

  EXPECT_EQ(FileTypeFor(DType::kF32), 0u);
  EXPECT_EQ(FileTypeFor(DType::kQ8_0), 7u);
  EXPECT_EQ(FileTypeFor(DType::kBF16), 32u);
  EXPECT_EQ(FileTypeFor(DType::kTQ1_0), 36u);
  EXPECT_EQ(FileTypeFor(DType::kI2_S), 40u);
}

}  // namespace
}  // namespace bitfleet::quantize

#include "core/dtype.h"

#include "gtest/gtest.h"

namespace bitfleet {
namespace {

TEST(DTypeTest, BlockGeometryMatchesGgml) {
  EXPECT_EQ(*RowBytes(DType::kTQ2_0, 256), 66u);
  EXPECT_EQ(*RowBytes(DType::kTQ1_0, 512), 108u);
  EXPECT_EQ(*RowBytes(DType::kQ4_0, 64), 36u);
  EXPECT_EQ(*RowBytes(DType::kQ4_1, 32), 20u);
  EXPECT_EQ(*RowBytes(DType::kQ8_0, 32), 34u);
  EXPECT_EQ(*RowBytes(DType::kBF16, 3), 6u);
  EXPECT_EQ(*RowBytes(DType::kI2_S, 256), 64u);
}

TEST(DTypeTest, PartialBlockIsRejected) {
  auto bytes = RowBytes(DType::kTQ2_0, 100);
  ASSERT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status().message().find("tq2_0"), std::string::npos);
}

TEST(DTypeTest, I2sTensorHasTail) {
  EXPECT_EQ(*TensorBytes(DType::kI2_S, 128, 128 * 3), 3u * 32 + 32);
  EXPECT_EQ(*TensorBytes(DType::kF32, 4, 8), 32u);
}

TEST(DTypeTest, OverflowIsAnError) {
  EXPECT_FALSE(TensorBytes(DType::kF32, 1, ~uint64_t{0}).ok());
}

TEST(DTypeTest, LookupByIdAndName) {
  EXPECT_EQ(FindDType(35)->type, DType::kTQ2_0);
  EXPECT_EQ(FindDType(36)->type, DType::kI2_S);
  EXPECT_EQ(FindDType(4), nullptr);  // removed ggml type ids are unknown
  EXPECT_EQ(FindDTypeByName("TQ1_0")->type, DType::kTQ1_0);
  EXPECT_EQ(FindDTypeByName("q5_k"), nullptr);
}

}  // namespace
}  // namespace bitfleet

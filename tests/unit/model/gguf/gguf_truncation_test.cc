// Truncation sweep and random byte mutations over a small valid file: every cut before the
// end of the last tensor's data must fail with a clean "truncated" error, and no mutation may
// crash the reader (the libFuzzer target in tests/fuzz/ goes further under ASan/UBSan).
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf.h"
#include "tests/unit/model/gguf/gguf_test_util.h"

namespace bitfleet::gguf {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A file with every value type, a nested array, and tensors of several types.
std::vector<uint8_t> SampleFile() {
  GgufWriter writer;
  writer.SetString("general.architecture", "bitnet");
  writer.Set("u8", Value::U8(1));
  writer.Set("i8", Value::I8(-1));
  writer.Set("u16", Value::U16(2));
  writer.Set("i16", Value::I16(-2));
  writer.SetU32("u32", 3);
  writer.Set("i32", Value::I32(-3));
  writer.Set("u64", Value::U64(4));
  writer.Set("i64", Value::I64(-4));
  writer.SetF32("f32", 0.5f);
  writer.Set("f64", Value::F64(0.25));
  writer.SetBool("bool", true);
  writer.SetString("empty", "");
  writer.Set("tokens", Value::StringArray({"<s>", "", "hello"}));
  writer.Set("scores", Value::F32Array({0.0f, -1.0f}));
  writer.Set("nested", Value::MakeArray(Array{ValueType::kArray, {Value::I32Array({1, 2}), Value::I32Array({})}}));
  writer.Set(std::string(kAlignmentKey), Value::U32(64));
  std::vector<uint8_t> data(96);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i);
  EXPECT_TRUE(writer.AddTensor("w.f32", DType::kF32, {4, 2}, std::vector<uint8_t>(data.begin(), data.begin() + 32)).ok());
  EXPECT_TRUE(writer.AddTensor("w.i2s", DType::kI2_S, {128, 2}, data).ok());
  EXPECT_TRUE(writer.AddTensor("w.q8", DType::kQ8_0, {32}, std::vector<uint8_t>(data.begin(), data.begin() + 34)).ok());
  return *writer.WriteBuffer();
}

struct Layout {
  uint64_t data_offset;
  uint64_t data_end;  // end of the last tensor's bytes (before its padding)
};

Layout LayoutOf(const std::vector<uint8_t>& bytes) {
  auto file = GgufFile::Parse(bytes);
  EXPECT_TRUE(file.ok()) << file.status();
  Layout layout{(*file)->data_offset(), 0};
  for (const TensorInfo& t : (*file)->tensors()) {
    layout.data_end = std::max(layout.data_end, layout.data_offset + t.offset + t.size_bytes);
  }
  return layout;
}

void ExpectTruncatedError(const std::vector<uint8_t>& bytes, size_t cut) {
  auto file = GgufFile::Parse(std::span<const uint8_t>(bytes.data(), cut));
  ASSERT_FALSE(file.ok()) << "prefix of " << cut << " bytes was accepted";
  EXPECT_TRUE(absl::IsInvalidArgument(file.status())) << file.status();
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("truncated")) << "cut at " << cut;
}

TEST(GgufTruncationTest, EveryHeaderPrefixFails) {
  const std::vector<uint8_t> bytes = SampleFile();
  const Layout layout = LayoutOf(bytes);
  ASSERT_GT(layout.data_offset, 200u);
  for (size_t cut = 0; cut <= layout.data_offset; ++cut) ExpectTruncatedError(bytes, cut);
}

TEST(GgufTruncationTest, RandomCutsInsideTheDataFail) {
  const std::vector<uint8_t> bytes = SampleFile();
  const Layout layout = LayoutOf(bytes);
  std::mt19937_64 rng(20240601);
  std::uniform_int_distribution<size_t> pick(0, layout.data_end - 1);
  for (int i = 0; i < 200; ++i) ExpectTruncatedError(bytes, pick(rng));
  for (size_t cut = layout.data_offset; cut < layout.data_end; ++cut) ExpectTruncatedError(bytes, cut);
}

TEST(GgufTruncationTest, OnlyTheFinalPaddingMayBeMissing) {
  const std::vector<uint8_t> bytes = SampleFile();
  const Layout layout = LayoutOf(bytes);
  ASSERT_LT(layout.data_end, bytes.size());
  for (size_t cut = layout.data_end; cut <= bytes.size(); ++cut) {
    auto file = GgufFile::Parse(std::span<const uint8_t>(bytes.data(), cut));
    ASSERT_TRUE(file.ok()) << cut << ": " << file.status();
    EXPECT_EQ((*file)->tensors().size(), 3u);
  }
}

TEST(GgufTruncationTest, RandomByteMutationsNeverCrash) {
  const std::vector<uint8_t> original = SampleFile();
  const Layout layout = LayoutOf(original);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<size_t> header_pos(0, layout.data_offset - 1);
  std::uniform_int_distribution<size_t> any_pos(0, original.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> flips(1, 4);
  int accepted = 0;
  for (int iteration = 0; iteration < 5000; ++iteration) {
    std::vector<uint8_t> bytes = original;
    for (int f = flips(rng); f > 0; --f) {
      // Mostly the header: flips in tensor data change nothing the reader checks.
      const size_t pos = iteration % 10 == 0 ? any_pos(rng) : header_pos(rng);
      bytes[pos] = iteration % 3 == 0 ? static_cast<uint8_t>(bytes[pos] ^ (1u << (byte(rng) % 8)))
                                      : static_cast<uint8_t>(byte(rng));
    }
    auto file = GgufFile::Parse(bytes);
    if (file.ok()) {
      ++accepted;
      testing::TouchEverything(**file);
      for (const TensorInfo& t : (*file)->tensors()) {
        ASSERT_EQ((*file)->TensorData(t).size(), t.size_bytes) << t.name;
      }
    } else {
      EXPECT_THAT(std::string(file.status().message()), StartsWith("GGUF: "));
    }
  }
  // Some mutations (string bytes, float values) keep the file valid; most do not.
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, 5000);
}

}  // namespace
}  // namespace bitfleet::gguf

// GgufWriter: exact bytes, round trips through the reader, alignment variants, errors and the
// atomic file write.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf.h"
#include "tests/unit/model/gguf/gguf_test_util.h"

namespace bitfleet::gguf {
namespace {

using ::testing::HasSubstr;
using testing::SameValue;

std::string Message(const Status& status) { return std::string(status.message()); }

std::vector<uint8_t> Iota(size_t n, uint8_t start = 1) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(start + i);
  return out;
}

// Written out by hand from the GGUF spec: one uint32 key and one f32 [2] tensor.
TEST(GgufWriterTest, ExactBytes) {
  GgufWriter writer;
  writer.SetU32("k", 5);
  std::vector<uint8_t> data = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40};  // 1.0f, 2.0f
  ASSERT_TRUE(writer.AddTensor("t", DType::kF32, {2}, data).ok());

  std::vector<uint8_t> expected = {
      'G', 'G', 'U', 'F',                              // magic
      3, 0, 0, 0,                                      // version
      1, 0, 0, 0, 0, 0, 0, 0,                          // tensor count
      1, 0, 0, 0, 0, 0, 0, 0,                          // metadata entry count
      1, 0, 0, 0, 0, 0, 0, 0, 'k',                     // key
      4, 0, 0, 0,                                      // type uint32
      5, 0, 0, 0,                                      // value
      1, 0, 0, 0, 0, 0, 0, 0, 't',                     // tensor name
      1, 0, 0, 0,                                      // n_dims
      2, 0, 0, 0, 0, 0, 0, 0,                          // dim 0
      0, 0, 0, 0,                                      // type f32
      0, 0, 0, 0, 0, 0, 0, 0,                          // data offset
  };
  ASSERT_EQ(expected.size(), 74u);
  expected.resize(96, 0);  // padding to the 32-byte aligned data section
  expected.insert(expected.end(), data.begin(), data.end());
  expected.resize(128, 0);  // the last tensor is padded too, as llama.cpp does

  auto bytes = writer.WriteBuffer();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, expected);

  auto file = GgufFile::Parse(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 3u);
  EXPECT_EQ((*file)->data_offset(), 96u);
  EXPECT_EQ((*file)->alignment(), 32u);
  const TensorInfo* t = (*file)->FindTensor("t");
  ASSERT_NE(t, nullptr);
  auto view = (*file)->TensorData(*t);
  EXPECT_EQ(std::vector<uint8_t>(view.begin(), view.end()), data);
  EXPECT_EQ(view.data(), bytes->data() + 96);  // zero-copy view into the buffer
}

// Every value type, including empty strings, empty arrays and nested arrays.
std::vector<KeyValue> AllValueKinds() {
  Array nested{ValueType::kArray, {Value::I32Array({1, -2}), Value::I32Array({}),
                                   Value::MakeArray(Array{ValueType::kInt32, {Value::I32(7)}})}};
  Array deep{ValueType::kArray, {Value::MakeArray(Array{ValueType::kArray, {Value::StringArray({"x", ""})}})}};
  return {
      {"u8", Value::U8(255)},
      {"i8", Value::I8(-128)},
      {"u16", Value::U16(65535)},
      {"i16", Value::I16(-32768)},
      {"u32", Value::U32(4000000000u)},
      {"i32", Value::I32(std::numeric_limits<int32_t>::min())},
      {"u64", Value::U64(~uint64_t{0})},
      {"i64", Value::I64(std::numeric_limits<int64_t>::min())},
      {"f32", Value::F32(-1.25f)},
      {"f32.nan", Value::F32(std::nanf(""))},
      {"f64", Value::F64(1e300)},
      {"bool.t", Value::Bool(true)},
      {"bool.f", Value::Bool(false)},
      {"str", Value::String("hello \xe2\x9c\x93")},
      {"str.empty", Value::String("")},
      {"arr.empty", Value::MakeArray(Array{ValueType::kUint8, {}})},
      {"arr.str", Value::StringArray({"a", "", "ccc"})},
      {"arr.f32", Value::F32Array({0.5f, -0.0f})},
      {"arr.i32", Value::I32Array({1, 2, 3})},
      {"arr.bool", Value::MakeArray(Array{ValueType::kBool, {Value::Bool(true), Value::Bool(false)}})},
      {"arr.u64", Value::MakeArray(Array{ValueType::kUint64, {Value::U64(1), Value::U64(~uint64_t{0})}})},
      {"arr.f64", Value::MakeArray(Array{ValueType::kFloat64, {Value::F64(0.1)}})},
      {"arr.nested", Value::MakeArray(nested)},
      {"arr.deep", Value::MakeArray(deep)},
      {"arr.empty_nested", Value::MakeArray(Array{ValueType::kArray, {}})},
  };
}

TEST(GgufWriterTest, RoundTripsEveryValueType) {
  GgufWriter writer;
  const auto kinds = AllValueKinds();
  for (const KeyValue& kv : kinds) writer.Set(kv.key, kv.value);
  auto bytes = writer.WriteBuffer();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto file = GgufFile::Parse(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->metadata().size(), kinds.size());
  for (size_t i = 0; i < kinds.size(); ++i) {
    const KeyValue& got = (*file)->metadata()[i];
    EXPECT_EQ(got.key, kinds[i].key);  // insertion order is kept
    EXPECT_TRUE(SameValue(got.value, kinds[i].value)) << kinds[i].key;
  }
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST(GgufWriterTest, SetReplacesInPlace) {
  GgufWriter writer;
  writer.SetU32("a", 1);
  writer.SetU32("b", 2);
  writer.SetString("a", "again");
  auto file = *GgufFile::Parse(*writer.WriteBuffer());
  ASSERT_EQ(file->metadata().size(), 2u);
  EXPECT_EQ(file->metadata()[0].key, "a");
  EXPECT_EQ(*file->GetString("a"), "again");
}

class GgufAlignmentTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(GgufAlignmentTest, TensorsLandOnAlignedOffsets) {
  const uint32_t alignment = GetParam();
  GgufWriter writer;
  if (alignment != kDefaultAlignment) writer.Set(std::string(kAlignmentKey), Value::U32(alignment));
  writer.SetString("general.architecture", "llama");
  struct Spec {
    std::string name;
    DType type;
    std::vector<uint64_t> shape;
    uint64_t bytes;
  };
  const std::vector<Spec> specs = {
      {"f16", DType::kF16, {5}, 10},
      {"f32", DType::kF32, {3, 2}, 24},
      {"q8", DType::kQ8_0, {32, 2}, 68},
      {"q4", DType::kQ4_0, {64}, 36},
      {"tq2", DType::kTQ2_0, {256}, 66},
      {"tq1", DType::kTQ1_0, {256, 1, 2}, 108},
      {"i2s", DType::kI2_S, {128, 2}, 96},
      {"bf16", DType::kBF16, {1, 1, 1, 3}, 6},
  };
  for (size_t i = 0; i < specs.size(); ++i) {
    ASSERT_TRUE(writer.AddTensor(specs[i].name, specs[i].type, specs[i].shape,
                                 Iota(specs[i].bytes, static_cast<uint8_t>(i * 16)))
                    .ok());
  }
  auto bytes = writer.WriteBuffer();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto file = GgufFile::Parse(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->alignment(), alignment);
  EXPECT_EQ((*file)->data_offset() % alignment, 0u);
  EXPECT_EQ(bytes->size() % alignment, 0u);
  ASSERT_EQ((*file)->tensors().size(), specs.size());
  uint64_t expected_offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorInfo& t = (*file)->tensors()[i];
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.type, specs[i].type);
    EXPECT_EQ(t.shape, specs[i].shape);
    EXPECT_EQ(t.size_bytes, specs[i].bytes);
    EXPECT_EQ(t.offset, expected_offset);  // packed in order, as llama.cpp requires
    auto view = (*file)->TensorData(t);
    EXPECT_EQ(std::vector<uint8_t>(view.begin(), view.end()), Iota(specs[i].bytes, static_cast<uint8_t>(i * 16)));
    expected_offset += (specs[i].bytes + alignment - 1) / alignment * alignment;
  }
  EXPECT_EQ((*file)->data_offset() + expected_offset, bytes->size());
}

INSTANTIATE_TEST_SUITE_P(Alignments, GgufAlignmentTest, ::testing::Values(1u, 8u, 32u, 64u, 4096u));

TEST(GgufWriterTest, FillerTensorsAreProducedAtWriteTime) {
  GgufWriter writer;
  int calls = 0;
  ASSERT_TRUE(writer
                  .AddTensor("filled", DType::kF32, {4},
                             GgufWriter::Filler([&](std::span<uint8_t> out) {
                               ++calls;
                               EXPECT_EQ(out.size(), 16u);
                               for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(100 + i);
                               return absl::OkStatus();
                             }))
                  .ok());
  EXPECT_EQ(calls, 0);
  auto bytes = *writer.WriteBuffer();
  EXPECT_EQ(calls, 1);
  auto file = *GgufFile::Parse(bytes);
  auto view = file->TensorData(*file->FindTensor("filled"));
  EXPECT_EQ(std::vector<uint8_t>(view.begin(), view.end()), Iota(16, 100));
}

// A file without tensors has no data section to align: the directory is not padded, so the
// largest alignment the format allows costs nothing (gguf_fuzz once ran out of memory padding
// a few hundred bytes of metadata to 2^31), and the reader takes the file back.
TEST(GgufWriterTest, FileWithoutTensorsIsNotPadded) {
  GgufWriter writer;
  writer.Set(std::string(kAlignmentKey), Value::U32(uint32_t{1} << 31));
  writer.Set("general.name", Value::String("no tensors"));
  auto bytes = writer.WriteBuffer();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_LT(bytes->size(), 256u);
  auto file = GgufFile::Parse(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->alignment(), uint64_t{1} << 31);
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST(GgufWriterTest, RejectsBadTensors) {
  GgufWriter writer;
  ASSERT_TRUE(writer.AddTensor("w", DType::kF32, {2}, Iota(8)).ok());
  EXPECT_THAT(Message(writer.AddTensor("w", DType::kF32, {2}, Iota(8))), HasSubstr("duplicate tensor name 'w'"));
  EXPECT_THAT(Message(writer.AddTensor("", DType::kF32, {2}, Iota(8))), HasSubstr("empty"));
  EXPECT_THAT(Message(writer.AddTensor(std::string(64, 'n'), DType::kF32, {2}, Iota(8))),
              HasSubstr("at most 63"));
  EXPECT_THAT(Message(writer.AddTensor("x", DType::kF32, {}, Iota(8))), HasSubstr("0 dimensions"));
  EXPECT_THAT(Message(writer.AddTensor("x", DType::kF32, {1, 1, 1, 1, 1}, Iota(4))), HasSubstr("5 dimensions"));
  EXPECT_THAT(Message(writer.AddTensor("x", DType::kF32, {2, 0}, Iota(8))), HasSubstr("dimension 1 is zero"));
  EXPECT_THAT(Message(writer.AddTensor("x", DType::kF32, {2}, Iota(7))), HasSubstr("7 data bytes"));
  EXPECT_THAT(Message(writer.AddTensor("x", DType::kQ8_0, {16}, Iota(17))), HasSubstr("q8_0 block"));
  EXPECT_THAT(Message(writer.AddTensor("x", static_cast<DType>(77), {2}, Iota(8))),
              HasSubstr("unknown tensor type id 77"));
  EXPECT_THAT(Message(writer.AddTensor("x", DType::kF32, {uint64_t{1} << 40, uint64_t{1} << 40}, Iota(8))),
              HasSubstr("overflows"));
  EXPECT_THAT(Message(writer.AddTensor("x", DType::kF32, {2}, GgufWriter::Filler())), HasSubstr("empty filler"));
  EXPECT_EQ(writer.tensor_count(), 1u);
}

TEST(GgufWriterTest, RejectsBadMetadata) {
  {
    GgufWriter writer;
    writer.Set(std::string(kAlignmentKey), Value::I32(64));
    EXPECT_THAT(Message(writer.WriteBuffer().status()), HasSubstr("general.alignment must be uint32, got int32"));
  }
  {
    GgufWriter writer;
    writer.Set(std::string(kAlignmentKey), Value::U32(48));
    EXPECT_THAT(Message(writer.WriteBuffer().status()), HasSubstr("48 is not a nonzero power of two"));
  }
  {
    GgufWriter writer;
    writer.Set("mixed", Value::MakeArray(Array{ValueType::kUint8, {Value::U8(1), Value::I32(2)}}));
    EXPECT_THAT(Message(writer.WriteBuffer().status()),
                HasSubstr("metadata key 'mixed': array element 1: has type int32 in an array of uint8"));
  }
  {
    GgufWriter writer;
    writer.Set("unset", Value());
    EXPECT_THAT(Message(writer.WriteBuffer().status()), HasSubstr("metadata key 'unset'"));
  }
  {
    GgufWriter writer;
    writer.SetU32("", 1);
    EXPECT_THAT(Message(writer.WriteBuffer().status()), HasSubstr("empty metadata key"));
  }
}

class GgufWriteFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gguf_writer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  size_t FileCount() const {
    return std::distance(std::filesystem::directory_iterator(dir_), std::filesystem::directory_iterator());
  }

  std::filesystem::path dir_;
};

TEST_F(GgufWriteFileTest, WritesAndReopens) {
  GgufWriter writer;
  writer.SetString("general.architecture", "bitnet");
  ASSERT_TRUE(writer.AddTensor("a", DType::kF32, {8}, Iota(32)).ok());
  ASSERT_TRUE(writer
                  .AddTensor("b", DType::kI2_S, {128, 4},
                             GgufWriter::Filler([](std::span<uint8_t> out) {
                               for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 7);
                               return absl::OkStatus();
                             }))
                  .ok());
  const std::string path = (dir_ / "model.gguf").string();
  std::vector<std::pair<size_t, size_t>> progress;
  ASSERT_TRUE(writer.WriteFile(path, [&](size_t done, size_t total) { progress.emplace_back(done, total); }).ok());
  EXPECT_EQ(progress, (std::vector<std::pair<size_t, size_t>>{{1, 2}, {2, 2}}));
  EXPECT_EQ(FileCount(), 1u);  // no temporary left behind

  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*(*file)->GetString("general.architecture"), "bitnet");
  const TensorInfo* b = (*file)->FindTensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->size_bytes, 128u * 4 / 4 + 32);
  auto view = (*file)->TensorData(*b);
  ASSERT_EQ(view.size(), b->size_bytes);
  for (size_t i = 0; i < view.size(); ++i) ASSERT_EQ(view[i], static_cast<uint8_t>(i * 7));
  // The file holds exactly what WriteBuffer produces.
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, *writer.WriteBuffer());
}

TEST_F(GgufWriteFileTest, FailedWriteKeepsTheOldFile) {
  const std::string path = (dir_ / "model.gguf").string();
  { std::ofstream(path) << "previous contents"; }
  GgufWriter writer;
  ASSERT_TRUE(writer.AddTensor("ok", DType::kF32, {1024}, Iota(4096)).ok());
  ASSERT_TRUE(writer
                  .AddTensor("broken", DType::kF32, {4},
                             GgufWriter::Filler([](std::span<uint8_t>) { return absl::DataLossError("disk on fire"); }))
                  .ok());
  Status status = writer.WriteFile(path);
  EXPECT_TRUE(absl::IsDataLoss(status));
  EXPECT_THAT(Message(status), HasSubstr("tensor 'broken': disk on fire"));
  EXPECT_THAT(Message(status), HasSubstr(path));
  EXPECT_EQ(FileCount(), 1u);
  std::ifstream in(path);
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(contents, "previous contents");
}

TEST_F(GgufWriteFileTest, MissingDirectoryIsAnError) {
  GgufWriter writer;
  Status status = writer.WriteFile((dir_ / "no" / "such" / "model.gguf").string());
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(Message(status), HasSubstr("cannot create"));
}

TEST_F(GgufWriteFileTest, OpenErrorsNameThePath) {
  auto missing = GgufFile::Open((dir_ / "absent.gguf").string());
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(Message(missing.status()), HasSubstr("absent.gguf"));

  const std::string path = (dir_ / "junk.gguf").string();
  { std::ofstream(path) << "not a gguf file at all"; }
  auto junk = GgufFile::Open(path);
  EXPECT_TRUE(absl::IsInvalidArgument(junk.status()));
  EXPECT_THAT(Message(junk.status()), HasSubstr(path + ": GGUF: bad magic"));
}

}  // namespace
}  // namespace bitfleet::gguf

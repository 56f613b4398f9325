// Hostile files: each case breaks one field of a small valid file and checks that parsing
// fails with an error that names the problem (and the key or tensor where there is one).
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf.h"
#include "tests/unit/model/gguf/gguf_test_util.h"

namespace bitfleet::gguf {
namespace {

using testing::Bytes;
using testing::Kv;
using testing::KvString;
using testing::KvU32;
using testing::RawFile;
using testing::RawTensor;
using testing::ValidRawFile;

constexpr uint32_t kArrayType = static_cast<uint32_t>(ValueType::kArray);

struct HostileCase {
  std::string name;
  std::function<void(RawFile&)> mutate;
  std::vector<std::string> expected;  // substrings of the error message
  ReadLimits limits = {};
};

void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name; }

// `depth` arrays nested inside each other, the innermost holding one uint8.
Bytes NestedArray(int depth) {
  Bytes out;
  for (int i = 1; i < depth; ++i) out.Put<uint32_t>(kArrayType).Put<uint64_t>(1);
  out.Put<uint32_t>(static_cast<uint32_t>(ValueType::kUint8)).Put<uint64_t>(1).Put<uint8_t>(9);
  return out;
}

ReadLimits Limits(std::function<void(ReadLimits&)> edit) {
  ReadLimits limits;
  edit(limits);
  return limits;
}

std::vector<HostileCase> Cases() {
  return {
      {"BadMagic", [](RawFile& f) { f.magic = 0x46554746; }, {"bad magic 0x46554746", "expected \"GGUF\""}},
      {"Version1", [](RawFile& f) { f.version = 1; }, {"GGUF version 1 is not supported"}},
      {"Version4", [](RawFile& f) { f.version = 4; }, {"unsupported GGUF version 4"}},
      {"BigEndian", [](RawFile& f) { f.version = 0x03000000; }, {"big-endian"}},
      {"KvCountOverLimit", [](RawFile& f) { f.kv_count = uint64_t{1} << 40; }, {"metadata entry count", "max_kv_count"}},
      {"KvCountPastEnd", [](RawFile& f) { f.kv_count = 60000; }, {"truncated", "60000 metadata entries"}},
      {"TensorCountOverLimit", [](RawFile& f) { f.tensor_count = ~uint64_t{0}; }, {"tensor count", "max_tensor_count"}},
      {"TensorCountPastEnd", [](RawFile& f) { f.tensor_count = 100000; }, {"truncated", "100000 tensors"}},
      {"UnknownValueType",
       [](RawFile& f) { f.kvs[1] = Kv("test.weird", 13, Bytes().Put<uint32_t>(0)); },
       {"metadata key 'test.weird'", "unknown value type 13"}},
      {"UnknownArrayElementType",
       [](RawFile& f) { f.kvs[2] = Kv("test.arr", kArrayType, Bytes().Put<uint32_t>(99).Put<uint64_t>(0)); },
       {"metadata key 'test.arr'", "unknown array element type 99"}},
      {"DuplicateKey", [](RawFile& f) { f.kvs.push_back(KvU32("test.u32", 8)); }, {"duplicate metadata key 'test.u32'"}},
      {"KeyTooLong", [](RawFile& f) { f.kvs[1] = KvU32(std::string(2000, 'k'), 1); },
       {"key of metadata entry #1", "max_string_bytes"}, Limits([](ReadLimits& l) { l.max_string_bytes = 1000; })},
      {"KeyLengthHuge",
       [](RawFile& f) { f.kvs[1] = Bytes().Put<uint64_t>(~uint64_t{0} - 3).data; },
       {"key of metadata entry #1", "string length 18446744073709551612", "max_string_bytes"}},
      {"StringValuePastEnd",
       [](RawFile& f) { f.kvs.back() = Kv("test.s", 8, Bytes().Put<uint64_t>(100000)); },
       {"metadata key 'test.s'", "truncated", "string value"}},
      {"ArrayOverLimit",
       [](RawFile& f) {
         f.kvs[2] = Kv("test.arr", kArrayType, Bytes().Put<uint32_t>(0).Put<uint64_t>(uint64_t{1} << 30));
       },
       {"metadata key 'test.arr'", "array of 1073741824 elements", "max_array_elements"}},
      {"ArrayPastEnd",
       [](RawFile& f) { f.kvs[2] = Kv("test.arr", kArrayType, Bytes().Put<uint32_t>(6).Put<uint64_t>(1000000)); },
       {"metadata key 'test.arr'", "truncated", "1000000 float32 elements"}},
      {"ArrayOfStringsPastEnd",
       [](RawFile& f) { f.kvs[2] = Kv("test.arr", kArrayType, Bytes().Put<uint32_t>(8).Put<uint64_t>(200)); },
       {"metadata key 'test.arr'", "truncated"}},
      {"NestedTooDeep", [](RawFile& f) { f.kvs[3] = Kv("test.deep", kArrayType, NestedArray(5)); },
       {"metadata key 'test.deep'", "nested deeper than 4", "max_array_depth"}},
      {"MetadataBudget", [](RawFile& f) { f.kvs[0] = KvString("general.architecture", std::string(4000, 'x')); },
       {"max_metadata_bytes"}, Limits([](ReadLimits& l) { l.max_metadata_bytes = 2048; })},
      {"InvalidBool", [](RawFile& f) { f.kvs[4] = Kv("test.flag", 7, Bytes().Put<uint8_t>(2)); },
       {"metadata key 'test.flag'", "invalid bool byte 2"}},
      {"AlignmentWrongType",
       [](RawFile& f) { f.kvs.push_back(Kv("general.alignment", 5, Bytes().Put<int32_t>(32))); },
       {"general.alignment must be uint32, got int32"}},
      {"AlignmentZero", [](RawFile& f) { f.kvs.push_back(KvU32("general.alignment", 0)); },
       {"general.alignment 0 is not a nonzero power of two"}},
      {"AlignmentNotPowerOfTwo", [](RawFile& f) { f.kvs.push_back(KvU32("general.alignment", 48)); },
       {"general.alignment 48 is not a nonzero power of two"}},
      {"DuplicateTensor", [](RawFile& f) { f.tensors[1].name = "a"; }, {"duplicate tensor name 'a'"}},
      {"TensorNameTooLong", [](RawFile& f) { f.tensors[1].name = std::string(300, 't'); },
       {"name of tensor #1", "max_string_bytes"}, Limits([](ReadLimits& l) { l.max_string_bytes = 256; })},
      {"ZeroDims", [](RawFile& f) { f.tensors[1].n_dims = 0; f.tensors[1].dims.clear(); },
       {"tensor 'b'", "has 0 dimensions"}},
      {"FiveDims", [](RawFile& f) { f.tensors[0].n_dims = 5; f.tensors[0].dims = {4, 2, 1, 1, 1}; },
       {"tensor 'a'", "has 5 dimensions"}},
      {"ZeroSizeDim", [](RawFile& f) { f.tensors[0].dims[1] = 0; }, {"tensor 'a'", "dimension 1 is zero"}},
      {"ElementCountOverflow",
       [](RawFile& f) { f.tensors[0].dims = {uint64_t{1} << 32, uint64_t{1} << 32}; },
       {"tensor 'a'", "element count overflows"}},
      {"ElementCountAboveInt64",
       [](RawFile& f) { f.tensors[0].dims = {uint64_t{1} << 62, 2}; },
       {"tensor 'a'", "element count overflows"}},
      {"UnknownTensorType", [](RawFile& f) { f.tensors[1].type = 99; }, {"tensor 'b'", "unknown tensor type id 99"}},
      // A k-quant (most int4 GGUFs): named, with what to do instead.
      {"KQuantTensorType", [](RawFile& f) { f.tensors[1].type = 12; },
       {"tensor 'b'", "type q4_K (ggml type id 12) is not supported", "llama-quantize"}},
      {"PartialBlock", [](RawFile& f) { f.tensors[1].dims = {16}; }, {"tensor 'b'", "q8_0 block"}},
      {"I2sPartialBlock",
       [](RawFile& f) { f.tensors[1].type = static_cast<uint32_t>(DType::kI2_S); f.tensors[1].dims = {64}; },
       {"tensor 'b'", "i2_s block"}},
      {"MisalignedOffset", [](RawFile& f) { f.tensors[1].offset = 33; },
       {"tensor 'b'", "data offset 33 is not a multiple of the alignment 32"}},
      {"OffsetPastEnd", [](RawFile& f) { f.tensors[1].offset = 1 << 20; }, {"tensor 'b'", "outside the file"}},
      {"OffsetOverflow", [](RawFile& f) { f.tensors[1].offset = ~uint64_t{0} - 31; },
       {"tensor 'b'", "outside the file"}},
      {"SizeBeyondFile", [](RawFile& f) { f.tensors[0].n_dims = 1; f.tensors[0].dims = {uint64_t{1} << 40}; },
       {"tensor 'a'", "4398046511104 bytes", "outside the file"}},
      {"DataSectionShort", [](RawFile& f) { f.data.resize(64); }, {"tensor 'b'", "outside the file"}},
      // Overlapping tensor data: aliasing would let a small file declare far more weights
      // than it holds.
      {"TensorsAlias", [](RawFile& f) { f.tensors[1].offset = 0; },
       {"tensors 'a' (32 bytes at data offset 0) and 'b' (34 bytes at data offset 0) overlap"}},
      {"TensorsOverlapPartially", [](RawFile& f) { f.tensors[0].dims = {4, 4}; },  // a: 64 bytes at 0, b at 32
       {"tensors 'a' (64 bytes at data offset 0) and 'b' (34 bytes at data offset 32) overlap"}},
      {"TensorsOverlapOutOfDirectoryOrder",
       [](RawFile& f) { f.tensors[0].offset = 64; },  // b [32, 66) runs into a [64, 96)
       {"tensors 'b' (34 bytes at data offset 32) and 'a' (32 bytes at data offset 64) overlap"}},
      {"TensorInsideALargerOne",
       [](RawFile& f) {
         // c is entirely inside a; b sits after both, so only a and c collide.
         f.tensors[0].dims = {4, 8};  // a: 128 bytes at 0
         f.tensors[1].offset = 128;
         f.tensors.push_back(RawTensor{"c", 1, {8}, static_cast<uint32_t>(DType::kF32), 64});
         f.data.resize(192);
       },
       {"tensors 'a' (128 bytes at data offset 0) and 'c' (32 bytes at data offset 64) overlap"}},
      {"NoDataSection", [](RawFile& f) { f.data.clear(); f.alignment = 1; }, {"tensor 'a'", "outside the file"}},
      {"TensorInfoTruncated",
       [](RawFile& f) {
         // The directory claims two tensors; the bytes after the first one start with a
         // name length that runs past the end of the file.
         f.tensors.pop_back();
         f.tensor_count = 2;
         f.alignment = 1;
         f.data = Bytes().Put<uint64_t>(100).data;
         f.data.resize(30);
       },
       {"truncated", "name of tensor #1"}},
  };
}

class GgufHostileTest : public ::testing::TestWithParam<HostileCase> {};

TEST_P(GgufHostileTest, RejectedWithANamedReason) {
  const HostileCase& c = GetParam();
  RawFile raw = ValidRawFile();
  c.mutate(raw);
  const std::vector<uint8_t> bytes = raw.Serialize();
  auto file = GgufFile::Parse(bytes, c.limits);
  ASSERT_FALSE(file.ok()) << c.name << " was accepted";
  EXPECT_TRUE(absl::IsInvalidArgument(file.status())) << file.status();
  const std::string message(file.status().message());
  EXPECT_THAT(message, ::testing::StartsWith("GGUF: "));
  for (const std::string& part : c.expected) EXPECT_THAT(message, ::testing::HasSubstr(part));
}

INSTANTIATE_TEST_SUITE_P(Corpus, GgufHostileTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<HostileCase>& info) { return info.param.name; });

TEST(GgufHostileTest, ValidBaseFileParses) {
  const std::vector<uint8_t> bytes = ValidRawFile().Serialize();
  auto file = GgufFile::Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().size(), 5u);
  EXPECT_EQ(*(*file)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*file)->GetF32Array("test.floats"), (std::vector<float>{1, 2, 3}));
  auto nested = (*file)->Find("test.nested")->AsArray();
  ASSERT_TRUE(nested.ok());
  ASSERT_EQ((*nested)->items.size(), 2u);
  EXPECT_EQ((*(*nested)->items[0].AsArray())->items.size(), 2u);
  EXPECT_TRUE((*(*nested)->items[1].AsArray())->items.empty());
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[1].size_bytes, 34u);
  EXPECT_EQ((*file)->TensorData((*file)->tensors()[1]).size(), 34u);
}

TEST(GgufHostileTest, NestingUpToTheLimitIsAccepted) {
  RawFile raw = ValidRawFile();
  raw.kvs[3] = Kv("test.deep", kArrayType, NestedArray(4));
  auto file = GgufFile::Parse(raw.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  const Value* value = (*file)->Find("test.deep");
  for (int level = 0; level < 3; ++level) value = &(*value->AsArray())->items.at(0);
  EXPECT_EQ(*(*value->AsArray())->items.at(0).AsU32(), 9u);
}

TEST(GgufHostileTest, Version2IsAccepted) {
  RawFile raw = ValidRawFile();
  raw.version = 2;
  auto file = GgufFile::Parse(raw.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 2u);
}

// A tensor may start exactly where the previous one ends (no padding at alignment 1), in
// either directory order; one byte less is an overlap.
TEST(GgufHostileTest, AdjacentTensorsAreAcceptedAndOneByteOfOverlapIsNot) {
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(KvU32("general.alignment", 1));
  raw.alignment = 1;
  raw.tensors[1].offset = 0;   // b: 34 bytes, [0, 34)
  raw.tensors[0].offset = 34;  // a: 32 bytes, [34, 66)
  raw.data.resize(66);
  const std::vector<uint8_t> bytes = raw.Serialize();
  auto file = GgufFile::Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo& a = (*file)->tensors()[0];
  const TensorInfo& b = (*file)->tensors()[1];
  EXPECT_EQ(b.offset + b.size_bytes, a.offset);
  const std::span<const uint8_t> a_data = (*file)->TensorData(a);
  const std::span<const uint8_t> b_data = (*file)->TensorData(b);
  ASSERT_EQ(b_data.size(), 34u);
  ASSERT_EQ(a_data.size(), 32u);
  EXPECT_EQ(b_data.data() + b_data.size(), a_data.data());
  EXPECT_EQ(a_data[0], 35);  // data byte 34 (ValidRawFile numbers its bytes from 1)

  raw.tensors[0].offset = 33;
  auto overlapping = GgufFile::Parse(raw.Serialize());
  ASSERT_FALSE(overlapping.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(overlapping.status())) << overlapping.status();
  EXPECT_THAT(std::string(overlapping.status().message()),
              ::testing::HasSubstr("tensors 'b' (34 bytes at data offset 0) and "
                                   "'a' (32 bytes at data offset 33) overlap"));
}

// Gaps between tensors (padding beyond the alignment, unused bytes) stay legal: only overlap is
// refused, not a layout other than llama.cpp's packed one.
TEST(GgufHostileTest, GapsBetweenTensorsAreAccepted) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].offset = 96;  // a [0, 32), 64 unused bytes, b [96, 130)
  raw.data.resize(160);
  auto file = GgufFile::Parse(raw.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->TensorData((*file)->tensors()[1]).size(), 34u);
}

TEST(GgufHostileTest, ForeignTensorInfoGivesEmptyView) {
  const std::vector<uint8_t> bytes = ValidRawFile().Serialize();
  auto file = *GgufFile::Parse(bytes);
  TensorInfo foreign = file->tensors()[0];
  foreign.offset = 1 << 20;
  EXPECT_TRUE(file->TensorData(foreign).empty());
  foreign.offset = ~uint64_t{0};
  EXPECT_TRUE(file->TensorData(foreign).empty());
}

}  // namespace
}  // namespace bitfleet::gguf

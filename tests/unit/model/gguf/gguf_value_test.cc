// Value coercions and GgufFile's typed getters.
#include <cmath>
#include <limits>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf.h"

namespace bitfleet::gguf {
namespace {

using ::testing::HasSubstr;

std::string Message(const Status& status) { return std::string(status.message()); }

TEST(GgufValueTest, IntegerCoercions) {
  EXPECT_EQ(*Value::U8(200).AsU32(), 200u);
  EXPECT_EQ(*Value::I32(-7).AsI64(), -7);
  EXPECT_EQ(*Value::I16(12).AsU64(), 12u);
  EXPECT_EQ(*Value::U64(uint64_t{1} << 40).AsI64(), int64_t{1} << 40);

  auto negative = Value::I32(-1).AsU64();
  ASSERT_FALSE(negative.ok());
  EXPECT_THAT(Message(negative.status()), HasSubstr("negative value -1"));

  auto too_big = Value::U64(uint64_t{1} << 32).AsU32();
  ASSERT_FALSE(too_big.ok());
  EXPECT_THAT(Message(too_big.status()), HasSubstr("does not fit in uint32"));

  auto huge = Value::U64(~uint64_t{0}).AsI64();
  ASSERT_FALSE(huge.ok());
  EXPECT_THAT(Message(huge.status()), HasSubstr("does not fit in int64"));

  auto from_float = Value::F32(1.0f).AsU64();
  ASSERT_FALSE(from_float.ok());
  EXPECT_THAT(Message(from_float.status()), HasSubstr("expected an integer, got float32"));
}

TEST(GgufValueTest, FloatCoercions) {
  EXPECT_EQ(*Value::F32(1.5f).AsF32(), 1.5f);
  EXPECT_EQ(*Value::F64(0.25).AsF32(), 0.25f);
  EXPECT_EQ(*Value::I32(-3).AsF32(), -3.0f);
  EXPECT_EQ(*Value::U64(10).AsF64(), 10.0);
  EXPECT_TRUE(std::isnan(*Value::F64(std::nan("")).AsF32()));
  EXPECT_TRUE(std::isinf(*Value::F64(std::numeric_limits<double>::infinity()).AsF32()));

  auto out_of_range = Value::F64(1e300).AsF32();
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_THAT(Message(out_of_range.status()), HasSubstr("does not fit in float32"));

  auto from_bool = Value::Bool(true).AsF64();
  ASSERT_FALSE(from_bool.ok());
  EXPECT_THAT(Message(from_bool.status()), HasSubstr("expected a number, got bool"));
}

TEST(GgufValueTest, NonNumericGetters) {
  EXPECT_TRUE(*Value::Bool(true).AsBool());
  EXPECT_EQ(*Value::String("hi").AsString(), "hi");
  EXPECT_EQ(*Value::String("").AsString(), "");
  EXPECT_EQ((*Value::StringArray({"x", "y"}).AsArray())->items.size(), 2u);

  EXPECT_THAT(Message(Value::U8(1).AsBool().status()), HasSubstr("expected bool, got uint8"));
  EXPECT_THAT(Message(Value::U8(1).AsString().status()), HasSubstr("expected string, got uint8"));
  EXPECT_THAT(Message(Value::String("x").AsArray().status()), HasSubstr("expected array, got string"));
  // A default Value holds nothing: every getter fails cleanly.
  EXPECT_FALSE(Value().AsU64().ok());
  EXPECT_FALSE(Value().AsF64().ok());
  EXPECT_FALSE(Value().AsArray().ok());
}

TEST(GgufValueTest, TypePredicates) {
  EXPECT_TRUE(Value::I64(1).is_integer());
  EXPECT_TRUE(Value::U16(1).is_integer());
  EXPECT_FALSE(Value::F32(1).is_integer());
  EXPECT_TRUE(Value::F64(1).is_float());
  EXPECT_FALSE(Value::Bool(true).is_integer());
  EXPECT_EQ(ValueTypeName(ValueType::kFloat64), "float64");
  EXPECT_EQ(ValueTypeName(static_cast<ValueType>(99)), "unknown");
}

TEST(GgufValueTest, TensorInfoCounts) {
  TensorInfo t;
  t.shape = {4, 3, 2};
  EXPECT_EQ(t.elements(), 24u);
  EXPECT_EQ(t.rows(), 6u);
  EXPECT_EQ(TensorInfo{}.elements(), 0u);
  EXPECT_EQ(TensorInfo{}.rows(), 0u);
}

// A parsed file holding one value of each shape the getters care about.
std::unique_ptr<GgufFile> GetterFile(std::vector<uint8_t>& storage) {
  GgufWriter writer;
  writer.SetString("s", "text");
  writer.SetU32("u32", 42);
  writer.Set("u8", Value::U8(9));
  writer.Set("neg", Value::I32(-5));
  writer.Set("big", Value::U64(uint64_t{1} << 33));
  writer.SetF32("f", 0.5f);
  writer.Set("f64", Value::F64(1e300));
  writer.SetBool("b", true);
  writer.Set("strs", Value::StringArray({"a", "", "c"}));
  writer.Set("floats", Value::F32Array({1.0f, -2.0f}));
  writer.Set("ints", Value::I32Array({3, -4}));
  writer.Set("u32s", Value::MakeArray(Array{ValueType::kUint32, {Value::U32(1), Value::U32(3000000000u)}}));
  writer.Set("mixed", Value::MakeArray(Array{ValueType::kArray, {Value::I32Array({1})}}));
  storage = *writer.WriteBuffer();
  return *GgufFile::Parse(storage);
}

TEST(GgufFileGetterTest, TypedLookups) {
  std::vector<uint8_t> storage;
  auto file = GetterFile(storage);
  EXPECT_EQ(*file->GetString("s"), "text");
  EXPECT_EQ(*file->GetU32("u32"), 42u);
  EXPECT_EQ(*file->GetU32("u8"), 9u);
  EXPECT_EQ(*file->GetU64("big"), uint64_t{1} << 33);
  EXPECT_EQ(*file->GetF32("f"), 0.5f);
  EXPECT_EQ(*file->GetF32("u32"), 42.0f);
  EXPECT_TRUE(*file->GetBool("b"));
  EXPECT_EQ(*file->GetStringArray("strs"), (std::vector<std::string>{"a", "", "c"}));
  EXPECT_EQ(*file->GetF32Array("floats"), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(*file->GetF32Array("ints"), (std::vector<float>{3.0f, -4.0f}));
  EXPECT_EQ(*file->GetI32Array("ints"), (std::vector<int32_t>{3, -4}));
  EXPECT_EQ(file->Find("missing"), nullptr);
  ASSERT_NE(file->Find("u8"), nullptr);
  EXPECT_EQ(file->Find("u8")->type(), ValueType::kUint8);
}

TEST(GgufFileGetterTest, ErrorsNameTheKeyAndTypes) {
  std::vector<uint8_t> storage;
  auto file = GetterFile(storage);

  auto missing = file->GetU32("nope");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(Message(missing.status()), HasSubstr("'nope' not found"));

  auto wrong = file->GetU32("s");
  EXPECT_TRUE(absl::IsInvalidArgument(wrong.status()));
  EXPECT_THAT(Message(wrong.status()), HasSubstr("metadata key 's': expected an integer, got string"));

  EXPECT_THAT(Message(file->GetU32("neg").status()), HasSubstr("metadata key 'neg': negative value -5"));
  EXPECT_THAT(Message(file->GetU32("big").status()), HasSubstr("does not fit in uint32"));
  EXPECT_THAT(Message(file->GetF32("f64").status()), HasSubstr("metadata key 'f64'"));
  EXPECT_THAT(Message(file->GetBool("u32").status()), HasSubstr("expected bool, got uint32"));
  EXPECT_THAT(Message(file->GetString("b").status()), HasSubstr("expected string, got bool"));
  EXPECT_THAT(Message(file->GetStringArray("s").status()), HasSubstr("metadata key 's': expected array"));
  EXPECT_THAT(Message(file->GetStringArray("floats").status()),
              HasSubstr("metadata key 'floats': array element 0: expected string, got float32"));
  EXPECT_THAT(Message(file->GetI32Array("u32s").status()),
              HasSubstr("array element 1: value 3000000000 does not fit in int32"));
  EXPECT_THAT(Message(file->GetI32Array("floats").status()), HasSubstr("expected an integer, got float32"));
  EXPECT_THAT(Message(file->GetF32Array("mixed").status()), HasSubstr("expected a number, got array"));
  EXPECT_THAT(Message(file->GetF32Array("strs").status()), HasSubstr("expected a number, got string"));
}

}  // namespace
}  // namespace bitfleet::gguf

// The key/value section of a GGUF file: `kv_count` entries of
//   key (string) | value type (uint32) | value
// where an array value is element type (uint32) | count (uint64) | elements.
// Counts read from the file are checked against the caps in ReadLimits and against the
// bytes left in the file before anything is reserved, so a hostile header cannot make the
// reader allocate more than the file could possibly describe.
#include "absl/strings/str_cat.h"
#include "core/checked_math.h"
#include "model/gguf/gguf_parser.h"

namespace bitfleet::gguf {
namespace {

constexpr uint32_t kLastValueType = static_cast<uint32_t>(ValueType::kFloat64);

// The fewest bytes one encoded value of `type` takes (a string's length field, an array's
// element type and count).
uint64_t MinEncodedBytes(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
    case ValueType::kString:
      return 8;
    case ValueType::kArray:
      return 12;
  }
  return 1;
}

// The smallest possible entry: key length (8), value type (4), a one-byte value.
constexpr uint64_t kMinEntryBytes = 13;

// Memory charged for a nested array beyond its Value: the Array and its shared_ptr block.
constexpr uint64_t kNestedArrayOverhead = sizeof(Array) + 64;

}  // namespace

Status Parser::Charge(uint64_t bytes, std::string_view what) {
  const auto total = CheckedAdd(charged_bytes_, bytes);
  if (!total || *total > limits_.max_metadata_bytes) {
    return FormatError(absl::StrCat("decoded header exceeds the limit of ", limits_.max_metadata_bytes,
                                    " bytes (ReadLimits::max_metadata_bytes) at ", std::string(what)));
  }
  charged_bytes_ = *total;
  return absl::OkStatus();
}

Status Parser::ReadMetadata(GgufFile& file, uint64_t kv_count) {
  if (kv_count > cursor_.remaining() / kMinEntryBytes) {
    return FormatError(absl::StrCat("truncated: header declares ", kv_count, " metadata entries but only ",
                                    cursor_.remaining(), " bytes follow"));
  }
  file.metadata_.reserve(kv_count);
  file.key_index_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    const std::string entry = absl::StrCat("key of metadata entry #", i);
    BF_ASSIGN_OR_RETURN(std::string_view key_view, cursor_.ReadString(entry, limits_.max_string_bytes));
    std::string key(key_view);
    const std::string context = absl::StrCat("metadata key '", key, "': ");
    if (auto it = file.key_index_.find(key); it != file.key_index_.end()) {
      return FormatError(absl::StrCat("duplicate metadata key '", key, "' (entries #", it->second, " and #", i, ")"));
    }
    auto type_id = cursor_.Read<uint32_t>("value type");
    if (!type_id.ok()) return Annotate(type_id.status(), context);
    if (*type_id > kLastValueType) {
      return FormatError(absl::StrCat(context, "unknown value type ", *type_id));
    }
    BF_RETURN_IF_ERROR(Charge(sizeof(KeyValue) + key.size(), context));
    auto value = ReadValue(static_cast<ValueType>(*type_id), 0);
    if (!value.ok()) return Annotate(value.status(), context);
    file.key_index_.emplace(key, file.metadata_.size());
    file.metadata_.push_back(KeyValue{std::move(key), *std::move(value)});
  }
  return absl::OkStatus();
}

StatusOr<Value> Parser::ReadValue(ValueType type, uint32_t depth) {
  switch (type) {
    case ValueType::kUint8: {
      BF_ASSIGN_OR_RETURN(uint8_t v, cursor_.Read<uint8_t>("uint8 value"));
      return Value::U8(v);
    }
    case ValueType::kInt8: {
      BF_ASSIGN_OR_RETURN(int8_t v, cursor_.Read<int8_t>("int8 value"));
      return Value::I8(v);
    }
    case ValueType::kUint16: {
      BF_ASSIGN_OR_RETURN(uint16_t v, cursor_.Read<uint16_t>("uint16 value"));
      return Value::U16(v);
    }
    case ValueType::kInt16: {
      BF_ASSIGN_OR_RETURN(int16_t v, cursor_.Read<int16_t>("int16 value"));
      return Value::I16(v);
    }
    case ValueType::kUint32: {
      BF_ASSIGN_OR_RETURN(uint32_t v, cursor_.Read<uint32_t>("uint32 value"));
      return Value::U32(v);
    }
    case ValueType::kInt32: {
      BF_ASSIGN_OR_RETURN(int32_t v, cursor_.Read<int32_t>("int32 value"));
      return Value::I32(v);
    }
    case ValueType::kUint64: {
      BF_ASSIGN_OR_RETURN(uint64_t v, cursor_.Read<uint64_t>("uint64 value"));
      return Value::U64(v);
    }
    case ValueType::kInt64: {
      BF_ASSIGN_OR_RETURN(int64_t v, cursor_.Read<int64_t>("int64 value"));
      return Value::I64(v);
    }
    case ValueType::kFloat32: {
      BF_ASSIGN_OR_RETURN(float v, cursor_.Read<float>("float32 value"));
      return Value::F32(v);
    }
    case ValueType::kFloat64: {
      BF_ASSIGN_OR_RETURN(double v, cursor_.Read<double>("float64 value"));
      return Value::F64(v);
    }
    case ValueType::kBool: {
      BF_ASSIGN_OR_RETURN(uint8_t v, cursor_.Read<uint8_t>("bool value"));
      // Writers emit 0 or 1; anything else means the parse is out of step with the file.
      if (v > 1) return FormatError(absl::StrCat("invalid bool byte ", static_cast<unsigned>(v), " (must be 0 or 1)"));
      return Value::Bool(v == 1);
    }
    case ValueType::kString: {
      BF_ASSIGN_OR_RETURN(std::string_view s, cursor_.ReadString("string value", limits_.max_string_bytes));
      BF_RETURN_IF_ERROR(Charge(s.size(), "a string value"));
      return Value::String(std::string(s));
    }
    case ValueType::kArray:
      return ReadArray(depth);
  }
  return FormatError(absl::StrCat("unknown value type ", static_cast<uint32_t>(type)));
}

StatusOr<Value> Parser::ReadArray(uint32_t depth) {
  BF_ASSIGN_OR_RETURN(uint32_t element_id, cursor_.Read<uint32_t>("array element type"));
  if (element_id > kLastValueType) {
    return FormatError(absl::StrCat("unknown array element type ", element_id));
  }
  const auto element_type = static_cast<ValueType>(element_id);
  BF_ASSIGN_OR_RETURN(uint64_t count, cursor_.Read<uint64_t>("array length"));
  if (depth + 1 > limits_.max_array_depth) {
    return FormatError(absl::StrCat("arrays nested deeper than ", limits_.max_array_depth,
                                    " levels (ReadLimits::max_array_depth)"));
  }
  if (count > limits_.max_array_elements) {
    return FormatError(absl::StrCat("array of ", count, " elements exceeds the limit of ", limits_.max_array_elements,
                                    " (ReadLimits::max_array_elements)"));
  }
  const uint64_t min_bytes = MinEncodedBytes(element_type);
  if (count > cursor_.remaining() / min_bytes) {
    return FormatError(absl::StrCat("truncated: array of ", count, " ",
                                    std::string(ValueTypeName(element_type)), " elements at offset ",
                                    cursor_.pos(), " needs more than the ", cursor_.remaining(),
                                    " bytes that remain"));
  }
  // count <= remaining bytes, so these products cannot overflow.
  uint64_t charge = count * sizeof(Value);
  if (depth > 0) charge += kNestedArrayOverhead;
  BF_RETURN_IF_ERROR(Charge(charge, "an array"));

  Array array{element_type, {}};
  array.items.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    auto item = ReadValue(element_type, depth + 1);
    if (!item.ok()) return Annotate(item.status(), absl::StrCat("array element ", i, ": "));
    array.items.push_back(*std::move(item));
  }
  return Value::MakeArray(std::move(array));
}

}  // namespace bitfleet::gguf

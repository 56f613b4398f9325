// Metadata values: names of the value types, array factories and the typed getters with their
// coercion rules (integers convert when the value fits; floats accept integers).
#include <cfloat>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "model/gguf/gguf.h"

namespace bitfleet::gguf {
namespace {

Status WrongType(const char* wanted, ValueType actual) {
  const std::string_view name = ValueTypeName(actual);
  return absl::InvalidArgumentError(
      absl::StrCat("expected ", wanted, ", got ", std::string(name.data(), name.size())));
}

}  // namespace

std::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kUint8: return "uint8";
    case ValueType::kInt8: return "int8";
    case ValueType::kUint16: return "uint16";
    case ValueType::kInt16: return "int16";
    case ValueType::kUint32: return "uint32";
    case ValueType::kInt32: return "int32";
    case ValueType::kFloat32: return "float32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kUint64: return "uint64";
    case ValueType::kInt64: return "int64";
    case ValueType::kFloat64: return "float64";
  }
  return "unknown";
}

Value Value::StringArray(const std::vector<std::string>& v) {
  Array array{ValueType::kString, {}};
  array.items.reserve(v.size());
  for (const std::string& s : v) array.items.push_back(String(s));
  return MakeArray(std::move(array));
}

Value Value::F32Array(const std::vector<float>& v) {
  Array array{ValueType::kFloat32, {}};
  array.items.reserve(v.size());
  for (float f : v) array.items.push_back(F32(f));
  return MakeArray(std::move(array));
}

Value Value::I32Array(const std::vector<int32_t>& v) {
  Array array{ValueType::kInt32, {}};
  array.items.reserve(v.size());
  for (int32_t i : v) array.items.push_back(I32(i));
  return MakeArray(std::move(array));
}

bool Value::is_integer() const {
  switch (type_) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kUint16:
    case ValueType::kInt16:
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kUint64:
    case ValueType::kInt64:
      return true;
    default:
      return false;
  }
}

// Integers are stored as uint64_t (unsigned types) or int64_t (signed types); the
// std::get_if checks below also catch a default-constructed Value, which holds nothing.
StatusOr<uint64_t> Value::AsU64() const {
  if (const auto* u = std::get_if<uint64_t>(&storage_)) return *u;
  if (const auto* i = std::get_if<int64_t>(&storage_)) {
    if (*i < 0) return absl::InvalidArgumentError(absl::StrCat("negative value ", *i, " for an unsigned integer"));
    return static_cast<uint64_t>(*i);
  }
  return WrongType("an integer", type_);
}

StatusOr<int64_t> Value::AsI64() const {
  if (const auto* i = std::get_if<int64_t>(&storage_)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&storage_)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat("value ", *u, " does not fit in int64"));
    }
    return static_cast<int64_t>(*u);
  }
  return WrongType("an integer", type_);
}

StatusOr<uint32_t> Value::AsU32() const {
  BF_ASSIGN_OR_RETURN(uint64_t v, AsU64());
  if (v > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("value ", v, " does not fit in uint32"));
  }
  return static_cast<uint32_t>(v);
}

StatusOr<double> Value::AsF64() const {
  if (const auto* d = std::get_if<double>(&storage_)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&storage_)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&storage_)) return static_cast<double>(*i);
  return WrongType("a number", type_);
}

StatusOr<float> Value::AsF32() const {
  BF_ASSIGN_OR_RETURN(double v, AsF64());
  // Out-of-range finite doubles would silently become infinity; NaN and inf pass through.
  if (std::isfinite(v) && std::fabs(v) > FLT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("value ", v, " does not fit in float32"));
  }
  return static_cast<float>(v);
}

StatusOr<bool> Value::AsBool() const {
  if (const auto* b = std::get_if<bool>(&storage_)) return *b;
  return WrongType("bool", type_);
}

StatusOr<std::string_view> Value::AsString() const {
  if (const auto* s = std::get_if<std::string>(&storage_)) return std::string_view(*s);
  return WrongType("string", type_);
}

StatusOr<const Array*> Value::AsArray() const {
  if (const auto* a = std::get_if<std::shared_ptr<const Array>>(&storage_)) {
    if (*a != nullptr) return a->get();
  }
  return WrongType("array", type_);
}

}  // namespace bitfleet::gguf

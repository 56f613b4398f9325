// Look-ups on a parsed GgufFile: metadata by key (typed, with errors that name the key) and
// tensor data views.
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/checked_math.h"
#include "model/gguf/gguf.h"

namespace bitfleet::gguf {
namespace {

absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string KeyContext(std::string_view key) { return absl::StrCat("metadata key '", ToAbsl(key), "': "); }

Status WithKey(const Status& status, std::string_view key) {
  return Status(status.code(), absl::StrCat(KeyContext(key), status.message()));
}

// The array held by `value`, or an error naming the key.
StatusOr<const Array*> ArrayOf(const Value& value, std::string_view key) {
  auto array = value.AsArray();
  if (!array.ok()) return WithKey(array.status(), key);
  return *array;
}

Status ElementError(const Status& status, std::string_view key, size_t index) {
  return Status(status.code(), absl::StrCat(KeyContext(key), "array element ", index, ": ", status.message()));
}

}  // namespace

uint64_t TensorInfo::elements() const {
  if (shape.empty()) return 0;
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

const Value* GgufFile::Find(std::string_view key) const {
  auto it = key_index_.find(ToAbsl(key));
  return it == key_index_.end() ? nullptr : &metadata_[it->second].value;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(ToAbsl(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

StatusOr<const Value*> GgufFile::Require(std::string_view key) const {
  const Value* value = Find(key);
  if (value == nullptr) return absl::NotFoundError(absl::StrCat("metadata key '", ToAbsl(key), "' not found"));
  return value;
}

StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  auto s = value->AsString();
  if (!s.ok()) return WithKey(s.status(), key);
  return std::string(*s);
}

StatusOr<uint32_t> GgufFile::GetU32(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  auto v = value->AsU32();
  if (!v.ok()) return WithKey(v.status(), key);
  return *v;
}

StatusOr<uint64_t> GgufFile::GetU64(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  auto v = value->AsU64();
  if (!v.ok()) return WithKey(v.status(), key);
  return *v;
}

StatusOr<float> GgufFile::GetF32(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  auto v = value->AsF32();
  if (!v.ok()) return WithKey(v.status(), key);
  return *v;
}

StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  auto v = value->AsBool();
  if (!v.ok()) return WithKey(v.status(), key);
  return *v;
}

StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  BF_ASSIGN_OR_RETURN(const Array* array, ArrayOf(*value, key));
  std::vector<std::string> out;
  out.reserve(array->items.size());
  for (size_t i = 0; i < array->items.size(); ++i) {
    auto s = array->items[i].AsString();
    if (!s.ok()) return ElementError(s.status(), key, i);
    out.emplace_back(*s);
  }
  return out;
}

StatusOr<std::vector<float>> GgufFile::GetF32Array(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  BF_ASSIGN_OR_RETURN(const Array* array, ArrayOf(*value, key));
  std::vector<float> out;
  out.reserve(array->items.size());
  for (size_t i = 0; i < array->items.size(); ++i) {
    auto f = array->items[i].AsF32();
    if (!f.ok()) return ElementError(f.status(), key, i);
    out.push_back(*f);
  }
  return out;
}

StatusOr<std::vector<int32_t>> GgufFile::GetI32Array(std::string_view key) const {
  BF_ASSIGN_OR_RETURN(const Value* value, Require(key));
  BF_ASSIGN_OR_RETURN(const Array* array, ArrayOf(*value, key));
  std::vector<int32_t> out;
  out.reserve(array->items.size());
  for (size_t i = 0; i < array->items.size(); ++i) {
    auto v = array->items[i].AsI64();
    if (!v.ok()) return ElementError(v.status(), key, i);
    if (*v < std::numeric_limits<int32_t>::min() || *v > std::numeric_limits<int32_t>::max()) {
      return ElementError(absl::InvalidArgumentError(absl::StrCat("value ", *v, " does not fit in int32")), key, i);
    }
    out.push_back(static_cast<int32_t>(*v));
  }
  return out;
}

std::span<const uint8_t> GgufFile::TensorData(const TensorInfo& tensor) const {
  const auto start = CheckedAdd(data_offset_, tensor.offset);
  const auto end = start ? CheckedAdd(*start, tensor.size_bytes) : std::nullopt;
  if (!end || *end > bytes_.size()) return {};
  return bytes_.subspan(*start, tensor.size_bytes);
}

}  // namespace bitfleet::gguf

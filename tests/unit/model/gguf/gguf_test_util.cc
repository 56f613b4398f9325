#include "tests/unit/model/gguf/gguf_test_util.h"

namespace bitfleet::gguf::testing {
namespace {

uint64_t TouchValue(const Value& value) {
  uint64_t sum = static_cast<uint64_t>(value.type());
  if (auto u = value.AsU64(); u.ok()) sum += *u;
  if (auto i = value.AsI64(); i.ok()) sum += static_cast<uint64_t>(*i);
  if (auto f = value.AsF32(); f.ok()) sum += *f == 0.0f ? 1 : 2;
  if (auto b = value.AsBool(); b.ok()) sum += *b;
  if (auto s = value.AsString(); s.ok()) sum += s->size() + (s->empty() ? 0 : static_cast<uint8_t>(s->back()));
  if (auto a = value.AsArray(); a.ok()) {
    for (const Value& item : (*a)->items) sum += TouchValue(item);
  }
  return sum;
}

}  // namespace

std::vector<uint8_t> Kv(std::string_view key, uint32_t type, const Bytes& payload) {
  Bytes out;
  out.Str(key).Put<uint32_t>(type).Append(payload.data);
  return out.data;
}

std::vector<uint8_t> KvU32(std::string_view key, uint32_t value) {
  return Kv(key, static_cast<uint32_t>(ValueType::kUint32), Bytes().Put<uint32_t>(value));
}

std::vector<uint8_t> KvString(std::string_view key, std::string_view value) {
  return Kv(key, static_cast<uint32_t>(ValueType::kString), Bytes().Str(value));
}

namespace {

// Header, metadata and tensor directory, without padding or data.
Bytes EncodeDirectory(const RawFile& file) {
  Bytes out;
  out.Put<uint32_t>(file.magic).Put<uint32_t>(file.version);
  out.Put<uint64_t>(file.tensor_count.value_or(file.tensors.size()));
  out.Put<uint64_t>(file.kv_count.value_or(file.kvs.size()));
  for (const auto& kv : file.kvs) out.Append(kv);
  for (const RawTensor& t : file.tensors) {
    out.Str(t.name).Put<uint32_t>(t.n_dims);
    for (uint64_t d : t.dims) out.Put<uint64_t>(d);
    out.Put<uint32_t>(t.type).Put<uint64_t>(t.offset);
  }
  return out;
}

}  // namespace

uint64_t RawFile::DirectoryEnd() const { return EncodeDirectory(*this).data.size(); }

std::vector<uint8_t> RawFile::Serialize() const {
  Bytes out = EncodeDirectory(*this);
  while (out.data.size() % alignment != 0) out.data.push_back(0);
  out.Append(data);
  return out.data;
}

RawFile ValidRawFile() {
  RawFile file;
  file.kvs.push_back(KvString("general.architecture", "llama"));
  file.kvs.push_back(KvU32("test.u32", 7));
  {
    Bytes floats;
    floats.Put<uint32_t>(static_cast<uint32_t>(ValueType::kFloat32)).Put<uint64_t>(3);
    floats.Put<float>(1.0f).Put<float>(2.0f).Put<float>(3.0f);
    file.kvs.push_back(Kv("test.floats", static_cast<uint32_t>(ValueType::kArray), floats));
  }
  {
    // [[5, 6], []] as an array of int32 arrays.
    Bytes nested;
    nested.Put<uint32_t>(static_cast<uint32_t>(ValueType::kArray)).Put<uint64_t>(2);
    nested.Put<uint32_t>(static_cast<uint32_t>(ValueType::kInt32)).Put<uint64_t>(2).Put<int32_t>(5).Put<int32_t>(6);
    nested.Put<uint32_t>(static_cast<uint32_t>(ValueType::kInt32)).Put<uint64_t>(0);
    file.kvs.push_back(Kv("test.nested", static_cast<uint32_t>(ValueType::kArray), nested));
  }
  file.kvs.push_back(Kv("test.flag", static_cast<uint32_t>(ValueType::kBool), Bytes().Put<uint8_t>(1)));
  file.tensors.push_back(RawTensor{"a", 2, {4, 2}, static_cast<uint32_t>(DType::kF32), 0});
  file.tensors.push_back(RawTensor{"b", 1, {32}, static_cast<uint32_t>(DType::kQ8_0), 32});
  file.data.resize(96, 0);
  for (size_t i = 0; i < 32 + 34; ++i) file.data[i] = static_cast<uint8_t>(i + 1);
  return file;
}

bool SameValue(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case ValueType::kUint8:
    case ValueType::kUint16:
    case ValueType::kUint32:
    case ValueType::kUint64:
      return *a.AsU64() == *b.AsU64();
    case ValueType::kInt8:
    case ValueType::kInt16:
    case ValueType::kInt32:
    case ValueType::kInt64:
      return *a.AsI64() == *b.AsI64();
    case ValueType::kFloat32:
    case ValueType::kFloat64: {
      const double x = *a.AsF64();
      const double y = *b.AsF64();
      return std::memcmp(&x, &y, sizeof(double)) == 0;  // bitwise: NaN and -0 too
    }
    case ValueType::kBool:
      return *a.AsBool() == *b.AsBool();
    case ValueType::kString:
      return *a.AsString() == *b.AsString();
    case ValueType::kArray: {
      const Array& x = **a.AsArray();
      const Array& y = **b.AsArray();
      if (x.element_type != y.element_type || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!SameValue(x.items[i], y.items[i])) return false;
      }
      return true;
    }
  }
  return false;
}

uint64_t TouchEverything(const GgufFile& file) {
  uint64_t sum = 0;
  for (const KeyValue& kv : file.metadata()) {
    sum += kv.key.size() + TouchValue(kv.value);
    sum += file.Find(kv.key) != nullptr;
  }
  for (const TensorInfo& t : file.tensors()) {
    for (uint8_t byte : file.TensorData(t)) sum += byte;
    sum += file.FindTensor(t.name) != nullptr;
  }
  return sum;
}

}  // namespace bitfleet::gguf::testing

// GgufWriter: lays out and serializes a GGUF v3 file (layout in docs/gguf.md). The header is
// encoded in memory, then tensor data is streamed to the sink one tensor at a time.
#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/checked_math.h"
#include "model/gguf/gguf.h"
#include "model/gguf/gguf_sink.h"

namespace bitfleet::gguf {
namespace {

std::string TypeName(ValueType type) {
  const std::string_view name = ValueTypeName(type);
  return std::string(name.data(), name.size());
}

// Appends little-endian fields to a byte vector.
class Encoder {
 public:
  template <typename T>
  void Put(T value) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &value, sizeof(T));
  }
  void PutString(std::string_view s) {
    Put<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void Pad(uint64_t alignment) { out_.resize((out_.size() + alignment - 1) / alignment * alignment, 0); }
  const std::vector<uint8_t>& bytes() const { return out_; }

 private:
  std::vector<uint8_t> out_;
};

// Error unless `value` fits the unsigned on-disk type of `bits` bits.
StatusOr<uint64_t> Unsigned(const Value& value, int bits) {
  BF_ASSIGN_OR_RETURN(uint64_t v, value.AsU64());
  if (bits < 64 && v >> bits != 0) return absl::InvalidArgumentError(absl::StrCat("value ", v, " does not fit"));
  return v;
}

StatusOr<int64_t> Signed(const Value& value, int bits) {
  BF_ASSIGN_OR_RETURN(int64_t v, value.AsI64());
  const int64_t limit = bits < 64 ? int64_t{1} << (bits - 1) : 0;
  if (bits < 64 && (v < -limit || v >= limit)) {
    return absl::InvalidArgumentError(absl::StrCat("value ", v, " does not fit"));
  }
  return v;
}

// Encodes `value` (whose on-disk type is value.type()) without its type tag.
Status EncodeValue(const Value& value, Encoder& enc) {
  switch (value.type()) {
    case ValueType::kUint8: {
      BF_ASSIGN_OR_RETURN(uint64_t v, Unsigned(value, 8));
      enc.Put<uint8_t>(static_cast<uint8_t>(v));
      return absl::OkStatus();
    }
    case ValueType::kUint16: {
      BF_ASSIGN_OR_RETURN(uint64_t v, Unsigned(value, 16));
      enc.Put<uint16_t>(static_cast<uint16_t>(v));
      return absl::OkStatus();
    }
    case ValueType::kUint32: {
      BF_ASSIGN_OR_RETURN(uint64_t v, Unsigned(value, 32));
      enc.Put<uint32_t>(static_cast<uint32_t>(v));
      return absl::OkStatus();
    }
    case ValueType::kUint64: {
      BF_ASSIGN_OR_RETURN(uint64_t v, Unsigned(value, 64));
      enc.Put<uint64_t>(v);
      return absl::OkStatus();
    }
    case ValueType::kInt8: {
      BF_ASSIGN_OR_RETURN(int64_t v, Signed(value, 8));
      enc.Put<int8_t>(static_cast<int8_t>(v));
      return absl::OkStatus();
    }
    case ValueType::kInt16: {
      BF_ASSIGN_OR_RETURN(int64_t v, Signed(value, 16));
      enc.Put<int16_t>(static_cast<int16_t>(v));
      return absl::OkStatus();
    }
    case ValueType::kInt32: {
      BF_ASSIGN_OR_RETURN(int64_t v, Signed(value, 32));
      enc.Put<int32_t>(static_cast<int32_t>(v));
      return absl::OkStatus();
    }
    case ValueType::kInt64: {
      BF_ASSIGN_OR_RETURN(int64_t v, Signed(value, 64));
      enc.Put<int64_t>(v);
      return absl::OkStatus();
    }
    case ValueType::kFloat32: {
      BF_ASSIGN_OR_RETURN(float v, value.AsF32());
      enc.Put<float>(v);
      return absl::OkStatus();
    }
    case ValueType::kFloat64: {
      BF_ASSIGN_OR_RETURN(double v, value.AsF64());
      enc.Put<double>(v);
      return absl::OkStatus();
    }
    case ValueType::kBool: {
      BF_ASSIGN_OR_RETURN(bool v, value.AsBool());
      enc.Put<uint8_t>(v ? 1 : 0);
      return absl::OkStatus();
    }
    case ValueType::kString: {
      BF_ASSIGN_OR_RETURN(std::string_view v, value.AsString());
      enc.PutString(v);
      return absl::OkStatus();
    }
    case ValueType::kArray: {
      BF_ASSIGN_OR_RETURN(const Array* array, value.AsArray());
      enc.Put<uint32_t>(static_cast<uint32_t>(array->element_type));
      enc.Put<uint64_t>(array->items.size());
      for (size_t i = 0; i < array->items.size(); ++i) {
        const Value& item = array->items[i];
        Status status = item.type() == array->element_type
                            ? EncodeValue(item, enc)
                            : absl::InvalidArgumentError(absl::StrCat("has type ", TypeName(item.type()),
                                                                      " in an array of ",
                                                                      TypeName(array->element_type)));
        if (!status.ok()) return Status(status.code(), absl::StrCat("array element ", i, ": ", status.message()));
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown value type ", static_cast<uint32_t>(value.type())));
}

// Validates a tensor's name, type and shape; returns its size in bytes.
StatusOr<uint64_t> CheckTensor(const std::string& name, DType type, const std::vector<uint64_t>& shape) {
  if (name.empty()) return absl::InvalidArgumentError("tensor name is empty");
  if (name.size() > kMaxTensorNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor name '", name, "' is ", name.size(),
                                                   " bytes; llama.cpp allows at most ", kMaxTensorNameBytes));
  }
  const std::string context = absl::StrCat("tensor '", name, "': ");
  if (FindDType(static_cast<uint32_t>(type)) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(context, "unknown tensor type id ", static_cast<uint32_t>(type)));
  }
  if (shape.empty() || shape.size() > static_cast<size_t>(kMaxDims)) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "has ", shape.size(), " dimensions (must be 1 to ", kMaxDims, ")"));
  }
  uint64_t elements = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return absl::InvalidArgumentError(absl::StrCat(context, "dimension ", d, " is zero"));
    const auto product = CheckedMul(elements, shape[d]);
    if (!product || *product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(context, "element count overflows"));
    }
    elements = *product;
  }
  auto bytes = TensorBytes(type, shape[0], elements);
  if (!bytes.ok()) return Status(bytes.status().code(), absl::StrCat(context, bytes.status().message()));
  return *bytes;
}

}  // namespace

void GgufWriter::Set(std::string key, Value value) {
  for (KeyValue& kv : metadata_) {
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  }
  metadata_.push_back(KeyValue{std::move(key), std::move(value)});
}

Status GgufWriter::AddTensor(std::string name, DType type, std::vector<uint64_t> shape, std::vector<uint8_t> data) {
  BF_ASSIGN_OR_RETURN(uint64_t size, CheckTensor(name, type, shape));
  if (data.size() != size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", data.size(), " data bytes, but a ",
                                                   DTypeName(type), " tensor of this shape needs ", size));
  }
  if (tensor_index_.contains(name)) return absl::AlreadyExistsError(absl::StrCat("duplicate tensor name '", name, "'"));
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back(PendingTensor{std::move(name), type, std::move(shape), size, std::move(data), nullptr});
  return absl::OkStatus();
}

Status GgufWriter::AddTensor(std::string name, DType type, std::vector<uint64_t> shape, Filler filler) {
  BF_ASSIGN_OR_RETURN(uint64_t size, CheckTensor(name, type, shape));
  if (!filler) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': empty filler"));
  if (tensor_index_.contains(name)) return absl::AlreadyExistsError(absl::StrCat("duplicate tensor name '", name, "'"));
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back(PendingTensor{std::move(name), type, std::move(shape), size, {}, std::move(filler)});
  return absl::OkStatus();
}

StatusOr<uint64_t> GgufWriter::Alignment() const {
  for (const KeyValue& kv : metadata_) {
    if (kv.key != kAlignmentKey) continue;
    if (kv.value.type() != ValueType::kUint32) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment must be uint32, got ", TypeName(kv.value.type())));
    }
    BF_ASSIGN_OR_RETURN(uint64_t alignment, kv.value.AsU64());
    if (!std::has_single_bit(alignment)) {
      return absl::InvalidArgumentError(absl::StrCat("general.alignment ", alignment, " is not a nonzero power of two"));
    }
    return alignment;
  }
  return kDefaultAlignment;
}

Status GgufWriter::WriteTo(ByteSink& sink, const std::function<void(size_t, size_t)>& progress) const {
  BF_ASSIGN_OR_RETURN(uint64_t alignment, Alignment());
  Encoder enc;
  enc.Put<uint32_t>(kMagic);
  enc.Put<uint32_t>(kVersion);
  enc.Put<uint64_t>(tensors_.size());
  enc.Put<uint64_t>(metadata_.size());
  for (const KeyValue& kv : metadata_) {
    if (kv.key.empty()) return absl::InvalidArgumentError("empty metadata key");
    enc.PutString(kv.key);
    enc.Put<uint32_t>(static_cast<uint32_t>(kv.value.type()));
    if (Status status = EncodeValue(kv.value, enc); !status.ok()) {
      return Status(status.code(), absl::StrCat("metadata key '", kv.key, "': ", status.message()));
    }
  }
  // Tensors are packed in order, each starting at an aligned offset, as llama.cpp expects.
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    enc.PutString(t.name);
    enc.Put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (uint64_t dim : t.shape) enc.Put<uint64_t>(dim);
    enc.Put<uint32_t>(static_cast<uint32_t>(t.type));
    enc.Put<uint64_t>(offset);
    const auto end = CheckedAdd(offset, t.size_bytes);
    const auto next = end ? CheckedAlignUp(*end, alignment) : std::nullopt;
    if (!next) return absl::InvalidArgumentError("tensor data section overflows 64 bits");
    offset = *next;
  }
  // The data section starts aligned. A file without tensors has none, and is not padded: the
  // reader takes it without (as llama.cpp does), and a huge general.alignment (up to 2^31)
  // would otherwise turn a few hundred bytes of metadata into gigabytes (found by gguf_fuzz).
  if (!tensors_.empty()) enc.Pad(alignment);
  BF_RETURN_IF_ERROR(sink.Write(enc.bytes()));

  std::vector<uint8_t> scratch;  // one filler tensor at a time
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const PendingTensor& t = tensors_[i];
    if (t.filler) {
      scratch.assign(t.size_bytes, 0);
      if (Status status = t.filler(std::span<uint8_t>(scratch)); !status.ok()) {
        return Status(status.code(), absl::StrCat("tensor '", t.name, "': ", status.message()));
      }
      BF_RETURN_IF_ERROR(sink.Write(scratch));
    } else {
      BF_RETURN_IF_ERROR(sink.Write(t.data));
    }
    BF_RETURN_IF_ERROR(sink.WriteZeros((alignment - t.size_bytes % alignment) % alignment));
    if (progress) progress(i + 1, tensors_.size());
  }
  return absl::OkStatus();
}

StatusOr<std::vector<uint8_t>> GgufWriter::WriteBuffer() const {
  BufferSink sink;
  BF_RETURN_IF_ERROR(WriteTo(sink, nullptr));
  return sink.Take();
}

Status GgufWriter::WriteFile(const std::string& path, const std::function<void(size_t, size_t)>& progress) const {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileSink> sink, AtomicFileSink::Create(path));
  Status status = WriteTo(*sink, progress);
  if (status.ok()) status = sink->Commit();
  if (!status.ok()) return Status(status.code(), absl::StrCat(path, ": ", status.message()));
  return absl::OkStatus();
}

}  // namespace bitfleet::gguf

// GGUF v3 model files: metadata values, tensor directory, reader (mmap, zero-copy) and
// writer. The on-disk format is documented in docs/gguf.md. Files are hostile input: every
// size, count, offset and string is checked before use (DESIGN.md §9).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/dtype.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace bitfleet::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
inline constexpr uint32_t kVersion = 3;
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr int kMaxDims = 4;
// llama.cpp stores tensor names in a 64-byte field (GGML_MAX_NAME) with a terminating NUL, so
// the writer refuses longer names. The reader accepts any name within ReadLimits.
inline constexpr size_t kMaxTensorNameBytes = 63;
inline constexpr std::string_view kAlignmentKey = "general.alignment";

// Metadata value types, numbered as in the GGUF spec.
enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType type);

class Value;
class ByteSink;  // where GgufWriter's bytes go (internal, model/gguf/gguf_sink.h)

// A typed array; every element has `element_type` (arrays may nest).
struct Array {
  ValueType element_type = ValueType::kUint8;
  std::vector<Value> items;
};

// One metadata value. Scalars are stored in the widest C++ type of their class; `type()`
// remembers the on-disk type so a file can be written back unchanged.
class Value {
 public:
  Value() = default;
  static Value U8(uint8_t v) { return Value(ValueType::kUint8, uint64_t{v}); }
  static Value I8(int8_t v) { return Value(ValueType::kInt8, int64_t{v}); }
  static Value U16(uint16_t v) { return Value(ValueType::kUint16, uint64_t{v}); }
  static Value I16(int16_t v) { return Value(ValueType::kInt16, int64_t{v}); }
  static Value U32(uint32_t v) { return Value(ValueType::kUint32, uint64_t{v}); }
  static Value I32(int32_t v) { return Value(ValueType::kInt32, int64_t{v}); }
  static Value U64(uint64_t v) { return Value(ValueType::kUint64, v); }
  static Value I64(int64_t v) { return Value(ValueType::kInt64, v); }
  static Value F32(float v) { return Value(ValueType::kFloat32, double{v}); }
  static Value F64(double v) { return Value(ValueType::kFloat64, v); }
  static Value Bool(bool v) { return Value(ValueType::kBool, v); }
  static Value String(std::string v) { return Value(ValueType::kString, std::move(v)); }
  static Value MakeArray(Array a) { return Value(ValueType::kArray, std::make_shared<Array>(std::move(a))); }
  static Value StringArray(const std::vector<std::string>& v);
  static Value F32Array(const std::vector<float>& v);
  static Value I32Array(const std::vector<int32_t>& v);

  ValueType type() const { return type_; }
  bool is_integer() const;
  bool is_float() const { return type_ == ValueType::kFloat32 || type_ == ValueType::kFloat64; }

  // Typed access; errors name the expected and actual types. Integer getters accept any
  // integer type whose value fits; float getters accept floats and integers.
  StatusOr<uint64_t> AsU64() const;
  StatusOr<int64_t> AsI64() const;
  StatusOr<uint32_t> AsU32() const;
  StatusOr<double> AsF64() const;
  StatusOr<float> AsF32() const;
  StatusOr<bool> AsBool() const;
  StatusOr<std::string_view> AsString() const;
  StatusOr<const Array*> AsArray() const;

 private:
  using Storage = std::variant<std::monostate, uint64_t, int64_t, double, bool, std::string,
                               std::shared_ptr<const Array>>;
  Value(ValueType type, Storage storage) : type_(type), storage_(std::move(storage)) {}
  ValueType type_ = ValueType::kUint8;
  Storage storage_;
};

struct KeyValue {
  std::string key;
  Value value;
};

// One entry of the tensor directory. `shape` is in GGUF (ggml) order: shape[0] is the
// contiguous row length, shape[1] the number of rows, ...; unused trailing dims are absent.
struct TensorInfo {
  std::string name;
  std::vector<uint64_t> shape;
  DType type = DType::kF32;
  uint64_t offset = 0;      // relative to the start of the data section
  uint64_t size_bytes = 0;  // computed from type and shape, tail included (I2_S)

  // Product of `shape` (0 for an empty shape). Parsed and written tensors never overflow.
  uint64_t elements() const;
  uint64_t rows() const { return shape.empty() ? 0 : elements() / shape[0]; }
};

// Caps applied while parsing; the defaults accept every real model and bound the memory a
// hostile header can make the reader allocate.
struct ReadLimits {
  uint64_t max_kv_count = 1u << 16;
  uint64_t max_tensor_count = 1u << 20;
  uint64_t max_string_bytes = 1u << 20;      // one key, tensor name or string value
  uint64_t max_array_elements = 1u << 24;    // one array (a 256k vocab fits)
  uint32_t max_array_depth = 4;              // nested arrays
  // Approximate memory the decoded header may occupy: every value, key, string, tensor name
  // and directory entry is charged with its in-memory size.
  uint64_t max_metadata_bytes = 1ull << 30;
};

// A parsed GGUF file. Tensor data stays in the mapped file (or caller's buffer) and is
// returned as spans into it; the GgufFile must outlive those spans. Immutable after parsing,
// so concurrent reads are safe.
class GgufFile {
 public:
  // Maps and parses `path`. Errors name the file and the problem.
  static StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path, const ReadLimits& limits = {});
  // Parses a buffer the caller keeps alive (tests, fuzzing).
  static StatusOr<std::unique_ptr<GgufFile>> Parse(std::span<const uint8_t> bytes, const ReadLimits& limits = {});

  uint32_t version() const { return version_; }  // 2 or 3 (same layout)
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return bytes_.size(); }

  const std::vector<KeyValue>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  // nullptr when absent.
  const Value* Find(std::string_view key) const;
  const TensorInfo* FindTensor(std::string_view name) const;

  // Typed look-ups: NotFound when absent, InvalidArgument (naming the key) on a type mismatch.
  // They follow Value's coercions; array getters convert element by element (GetF32Array
  // takes any numeric elements, GetI32Array integers that fit int32) and name the element.
  StatusOr<std::string> GetString(std::string_view key) const;
  StatusOr<uint32_t> GetU32(std::string_view key) const;
  StatusOr<uint64_t> GetU64(std::string_view key) const;
  StatusOr<float> GetF32(std::string_view key) const;
  StatusOr<bool> GetBool(std::string_view key) const;
  StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  StatusOr<std::vector<float>> GetF32Array(std::string_view key) const;
  StatusOr<std::vector<int32_t>> GetI32Array(std::string_view key) const;

  // Bytes of a tensor of this file (offset and size were validated at parse time, and no two
  // tensors of a parsed file share a byte). A TensorInfo that does not fit this file (e.g.
  // from another file) gives an empty span.
  std::span<const uint8_t> TensorData(const TensorInfo& tensor) const;

 private:
  GgufFile() = default;
  friend class Parser;
  // Finds `key` or returns NotFound naming it.
  StatusOr<const Value*> Require(std::string_view key) const;

  std::unique_ptr<MappedFile> mapping_;  // null when parsing a caller's buffer
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;  // may exceed file_size() only when there are no tensors
  std::vector<KeyValue> metadata_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> key_index_;     // key -> metadata_ index
  absl::flat_hash_map<std::string, size_t> tensor_index_;  // name -> tensors_ index
};

// Builds a GGUF v3 file the way llama.cpp's gguf writer lays it out: header, metadata in
// insertion order, tensor directory, zero padding to `general.alignment` (default 32; set it
// with Set(kAlignmentKey, Value::U32(n))), then each tensor's data in the order added,
// followed by zero padding to the alignment (the last one too). Data is either owned bytes or
// produced on demand by a filler at write time, one tensor at a time, so multi-GB models need
// not sit in memory. Not thread-safe; WriteFile/WriteBuffer may be called repeatedly.
class GgufWriter {
 public:
  // Fills `out` (exactly the tensor's size in bytes).
  using Filler = std::function<Status(std::span<uint8_t> out)>;

  // Sets or replaces a metadata value; keys keep their first insertion order.
  void Set(std::string key, Value value);
  void SetString(std::string key, std::string v) { Set(std::move(key), Value::String(std::move(v))); }
  void SetU32(std::string key, uint32_t v) { Set(std::move(key), Value::U32(v)); }
  void SetF32(std::string key, float v) { Set(std::move(key), Value::F32(v)); }
  void SetBool(std::string key, bool v) { Set(std::move(key), Value::Bool(v)); }

  // Adds a tensor; errors on a duplicate or over-long name, a shape that is not 1 to 4
  // nonzero dims, a row that is not whole blocks of `type`, or a data size that does not
  // match the type and shape.
  Status AddTensor(std::string name, DType type, std::vector<uint64_t> shape, std::vector<uint8_t> data);
  Status AddTensor(std::string name, DType type, std::vector<uint64_t> shape, Filler filler);

  // Writes to `path` through a temporary file in the same directory and renames it into
  // place, so a failed write never leaves a truncated model behind. `progress`, when set, is
  // called after each tensor with (tensors done, tensors total).
  Status WriteFile(const std::string& path,
                   const std::function<void(size_t, size_t)>& progress = nullptr) const;
  // Serializes into memory (tests, small files).
  StatusOr<std::vector<uint8_t>> WriteBuffer() const;

  size_t tensor_count() const { return tensors_.size(); }

 private:
  // Streams the whole file into `sink`; shared by WriteFile and WriteBuffer.
  Status WriteTo(ByteSink& sink, const std::function<void(size_t, size_t)>& progress) const;
  StatusOr<uint64_t> Alignment() const;

  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<uint64_t> shape;
    uint64_t size_bytes;
    std::vector<uint8_t> data;  // used when filler is empty
    Filler filler;
  };
  std::vector<KeyValue> metadata_;
  std::vector<PendingTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;  // name -> tensors_ index
};

}  // namespace bitfleet::gguf

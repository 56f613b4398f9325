// Test helpers for the GGUF reader/writer: a field-level description of a raw GGUF file that
// tests mutate one field at a time to build hostile files, and value comparison.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/gguf/gguf.h"

namespace bitfleet::gguf::testing {

// Appends little-endian fields.
class Bytes {
 public:
  template <typename T>
  Bytes& Put(T value) {
    const size_t at = data.size();
    data.resize(at + sizeof(T));
    std::memcpy(data.data() + at, &value, sizeof(T));
    return *this;
  }
  Bytes& Str(std::string_view s) {
    Put<uint64_t>(s.size());
    data.insert(data.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Append(const std::vector<uint8_t>& bytes) {
    data.insert(data.end(), bytes.begin(), bytes.end());
    return *this;
  }
  std::vector<uint8_t> data;
};

// One encoded metadata entry: key, value type id, payload (already encoded).
std::vector<uint8_t> Kv(std::string_view key, uint32_t type, const Bytes& payload);
std::vector<uint8_t> KvU32(std::string_view key, uint32_t value);
std::vector<uint8_t> KvString(std::string_view key, std::string_view value);

struct RawTensor {
  std::string name;
  uint32_t n_dims;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t offset;
};

// A GGUF file described field by field. Serialize() writes exactly these fields, so a test
// can break any one of them.
struct RawFile {
  uint32_t magic = kMagic;
  uint32_t version = 3;
  std::optional<uint64_t> tensor_count;  // overrides tensors.size()
  std::optional<uint64_t> kv_count;      // overrides kvs.size()
  std::vector<std::vector<uint8_t>> kvs;
  std::vector<RawTensor> tensors;
  uint64_t alignment = 32;    // zero padding inserted after the directory
  std::vector<uint8_t> data;  // the data section

  std::vector<uint8_t> Serialize() const;
  // Offset just past the tensor directory (before the padding).
  uint64_t DirectoryEnd() const;
};

// A small valid file: five metadata entries (string, uint32, float array, nested int32
// array, bool) and two tensors: "a" f32 [4, 2] at 0 and "b" q8_0 [32] at 32. The data
// section holds both tensors, each padded to 32 bytes.
RawFile ValidRawFile();

// Deep equality of two values, on-disk types included.
bool SameValue(const Value& a, const Value& b);

// Reads every value and every tensor byte of `file` (the fuzz target does the same); returns
// a checksum so the work cannot be optimized away.
uint64_t TouchEverything(const GgufFile& file);

}  // namespace bitfleet::gguf::testing

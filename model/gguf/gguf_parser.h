// Internal to model/gguf: the parser behind GgufFile::Parse/Open. Split across
// gguf_reader.cc (header, tensor directory, data layout) and gguf_metadata_reader.cc
// (key/value section). One Parser parses one buffer once; it is not reused.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "model/gguf/byte_cursor.h"
#include "model/gguf/gguf.h"

namespace bitfleet::gguf {

class Parser {
 public:
  Parser(std::span<const uint8_t> bytes, const ReadLimits& limits)
      : bytes_(bytes), cursor_(bytes), limits_(limits) {}

  // Parses the whole header and validates every tensor's placement; fills `file`.
  Status Run(GgufFile& file);

 private:
  // gguf_reader.cc
  Status ReadHeader(GgufFile& file, uint64_t& tensor_count, uint64_t& kv_count);
  Status ReadAlignment(GgufFile& file);
  Status ReadTensorDirectory(GgufFile& file, uint64_t tensor_count);
  StatusOr<TensorInfo> ReadTensorInfo(uint64_t index);
  Status PlaceTensors(GgufFile& file);

  // gguf_metadata_reader.cc
  Status ReadMetadata(GgufFile& file, uint64_t kv_count);
  // Reads one value of `type`; `depth` is the number of enclosing arrays. Errors do not name
  // the key: ReadMetadata prefixes it.
  StatusOr<Value> ReadValue(ValueType type, uint32_t depth);
  StatusOr<Value> ReadArray(uint32_t depth);

  // Charges `bytes` of decoded memory against ReadLimits::max_metadata_bytes.
  Status Charge(uint64_t bytes, std::string_view what);

  std::span<const uint8_t> bytes_;
  ByteCursor cursor_;
  const ReadLimits& limits_;
  uint64_t charged_bytes_ = 0;
};

// The InvalidArgument error every format problem returns.
inline Status FormatError(const std::string& message) { return absl::InvalidArgumentError(message); }

// `status` with `prefix` put in front of its message (same code).
inline Status Annotate(const Status& status, const std::string& prefix) {
  return Status(status.code(), absl::StrCat(prefix, status.message()));
}

}  // namespace bitfleet::gguf

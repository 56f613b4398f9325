// Element types of model tensors, numbered as in GGUF (ggml_type ids from llama.cpp, and
// I2_S from bitnet.cpp), with the block geometry needed to size tensors safely.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "core/status.h"

namespace bitfleet {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kF64 = 28,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kI2_S = 36,
};

struct DTypeInfo {
  DType type;
  const char* name;         // lower case, as llama.cpp prints it: "f32", "tq2_0", "i2_s"
  uint32_t block_elems;     // weights per block; rows must be a multiple of this
  uint32_t block_bytes;     // bytes per block
  uint32_t tensor_tail_bytes;  // extra bytes after the whole tensor (I2_S: 32, scale inside)
};

// Every type bitfleet understands, in id order.
std::span<const DTypeInfo> AllDTypes();

// Looks up a type by its GGUF id; nullptr for ids bitfleet does not know.
const DTypeInfo* FindDType(uint32_t id);
// The name of a ggml type id that bitfleet does not read ("q4_K", "iq4_xs", ...), or nullptr
// for an id ggml does not define either: for error messages that say what a file holds.
const char* UnsupportedGgmlTypeName(uint32_t id);
// Looks up a type by name, case-insensitive ("TQ2_0", "q4_0", ...).
const DTypeInfo* FindDTypeByName(std::string_view name);

const DTypeInfo& Info(DType type);
inline const char* DTypeName(DType type) { return Info(type).name; }

// Bytes of one row of `elems` elements; error when elems is not a multiple of the block.
StatusOr<uint64_t> RowBytes(DType type, uint64_t elems);

// Bytes of a tensor of `elems` elements stored as rows of `row_elems` (shape[0]),
// including any per-tensor tail. Overflow-checked; error on a partial block.
StatusOr<uint64_t> TensorBytes(DType type, uint64_t row_elems, uint64_t elems);

// True for the ternary formats (TQ1_0, TQ2_0, I2_S).
bool IsTernary(DType type);
// True for block-quantized types (everything but F32/F16/BF16 and the plain integer types).
bool IsQuantized(DType type);

}  // namespace bitfleet

#include "core/dtype.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/checked_math.h"

namespace bitfleet {
namespace {

// Byte sizes follow llama.cpp's ggml type traits; I2_S follows bitnet.cpp (2 bits per weight,
// 128 weights per 32-byte block, one 32-byte tail per tensor that holds the fp32 scale).
constexpr std::array<DTypeInfo, 13> kTypes = {{
    {DType::kF32, "f32", 1, 4, 0},
    {DType::kF16, "f16", 1, 2, 0},
    {DType::kQ4_0, "q4_0", 32, 18, 0},
    {DType::kQ4_1, "q4_1", 32, 20, 0},
    {DType::kQ8_0, "q8_0", 32, 34, 0},
    {DType::kI8, "i8", 1, 1, 0},
    {DType::kI16, "i16", 1, 2, 0},
    {DType::kI32, "i32", 1, 4, 0},
    {DType::kF64, "f64", 1, 8, 0},
    {DType::kBF16, "bf16", 1, 2, 0},
    {DType::kTQ1_0, "tq1_0", 256, 54, 0},
    {DType::kTQ2_0, "tq2_0", 256, 66, 0},
    {DType::kI2_S, "i2_s", 128, 32, 32},
}};

}  // namespace

std::span<const DTypeInfo> AllDTypes() { return kTypes; }

const char* UnsupportedGgmlTypeName(uint32_t id) {
  // ggml's type ids (GGUF's tensor types) that bitfleet has no codec for; 4 and 5 were removed
  // from ggml (the old Q4_2 / Q4_3).
  static constexpr std::array<std::pair<uint32_t, const char*>, 21> kNames = {{
      {6, "q5_0"},     {7, "q5_1"},     {9, "q8_1"},     {10, "q2_K"},   {11, "q3_K"},    {12, "q4_K"},
      {13, "q5_K"},    {14, "q6_K"},    {15, "q8_K"},    {16, "iq2_xxs"}, {17, "iq2_xs"}, {18, "iq3_xxs"},
      {19, "iq1_s"},   {20, "iq4_nl"},  {21, "iq3_s"},   {22, "iq2_s"},   {23, "iq4_xs"}, {27, "i64"},
      {29, "iq1_m"},   {39, "mxfp4"},   {4, "q4_2 (removed from ggml)"},
  }};
  for (const auto& [type_id, name] : kNames) {
    if (type_id == id) return name;
  }
  return nullptr;
}

const DTypeInfo* FindDType(uint32_t id) {
  for (const auto& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == id) return &t;
  }
  return nullptr;
}

const DTypeInfo* FindDTypeByName(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  for (const auto& t : kTypes) {
    if (lower == t.name) return &t;
  }
  return nullptr;
}

const DTypeInfo& Info(DType type) {
  const DTypeInfo* info = FindDType(static_cast<uint32_t>(type));
  // Every enumerator has a table entry; a miss is a programming error, not bad input.
  if (info == nullptr) std::abort();
  return *info;
}

StatusOr<uint64_t> RowBytes(DType type, uint64_t elems) {
  const DTypeInfo& info = Info(type);
  if (elems % info.block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("row of ", elems, " elements is not a multiple of the ",
                                                   info.name, " block (", info.block_elems, ")"));
  }
  auto bytes = CheckedMul(elems / info.block_elems, info.block_bytes);
  if (!bytes) return absl::InvalidArgumentError("row size overflows 64 bits");
  return *bytes;
}

StatusOr<uint64_t> TensorBytes(DType type, uint64_t row_elems, uint64_t elems) {
  if (row_elems == 0 || elems % row_elems != 0) {
    return absl::InvalidArgumentError("tensor element count is not a whole number of rows");
  }
  BF_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(type, row_elems));
  auto bytes = CheckedMul(elems / row_elems, row_bytes);
  if (!bytes) return absl::InvalidArgumentError("tensor size overflows 64 bits");
  auto total = CheckedAdd(*bytes, Info(type).tensor_tail_bytes);
  if (!total) return absl::InvalidArgumentError("tensor size overflows 64 bits");
  return *total;
}

bool IsTernary(DType type) {
  return type == DType::kTQ1_0 || type == DType::kTQ2_0 || type == DType::kI2_S;
}

bool IsQuantized(DType type) {
  switch (type) {
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ8_0:
    case DType::kTQ1_0:
    case DType::kTQ2_0:
    case DType::kI2_S:
      return true;
    default:
      return false;
  }
}

}  // namespace bitfleet

// Overflow-checked size arithmetic for parsing hostile input (model files, requests).
#pragma once

#include <cstdint>
#include <optional>

namespace bitfleet {

// Returns a*b, or nullopt when the product does not fit in uint64_t.
inline std::optional<uint64_t> CheckedMul(uint64_t a, uint64_t b) {
  uint64_t out;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// Returns a+b, or nullopt when the sum does not fit in uint64_t.
inline std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t out;
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// Rounds `value` up to a multiple of `alignment` (> 0), or nullopt on overflow.
inline std::optional<uint64_t> CheckedAlignUp(uint64_t value, uint64_t alignment) {
  uint64_t rem = value % alignment;
  if (rem == 0) return value;
  return CheckedAdd(value, alignment - rem);
}

}  // namespace bitfleet

// Bit sets stored as 64-bit words: bit i is bit i % 64 of word i / 64. The token masks of
// constrained decoding travel this way (coordinator/output_constraint.h, worker/sampler.h).
#pragma once

#include <cstdint>
#include <span>

namespace bitfleet {

// Whether bit `i` is set; false for a negative `i` or one past the words.
inline bool BitIsSet(std::span<const uint64_t> words, int64_t i) {
  if (i < 0) return false;
  const uint64_t word = static_cast<uint64_t>(i) / 64;
  return word < words.size() && (words[word] >> (static_cast<uint64_t>(i) % 64) & 1) != 0;
}

}  // namespace bitfleet

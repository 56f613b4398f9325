// Counter-based pseudo-random numbers for synthetic weights.
//
// Element i of a stream is a pure function of (stream key, i): the SplitMix64 sequence started at
// the key, evaluated at position i. So any row range of a tensor can be generated on its own
// (chunked writing, any thread) and the bytes never depend on chunk sizes or machine. Only
// integer arithmetic is used to draw; floats are formed from integers with a single multiply,
// which IEEE 754 rounds identically everywhere (no libm, no contraction into FMA).
#pragma once

#include <cstdint>
#include <string_view>

namespace bitfleet::synth {

inline constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

// SplitMix64's output function (Steele, Lea, Flood 2014): a strong 64-bit mixer.
constexpr uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// FNV-1a over the bytes of `text`: names a stream ("blk.3.attn_q.weight") independent of order.
constexpr uint64_t HashName(std::string_view text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : text) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

// Key of the stream for tensor `name` under a user `seed`.
constexpr uint64_t StreamKey(uint64_t seed, std::string_view name) {
  return Mix64(Mix64(seed) ^ HashName(name));
}

// The i-th 64-bit draw of stream `key`.
constexpr uint64_t Draw(uint64_t key, uint64_t i) { return Mix64(key + (i + 1) * kGoldenGamma); }

// Maps 64 random bits to {0, 1, ..., n-1} (multiply-shift on the top 32 bits; bias < 2^-32 * n).
constexpr uint32_t DrawBelow(uint64_t bits, uint32_t n) {
  return static_cast<uint32_t>(((bits >> 32) * n) >> 32);
}

// An approximately normal integer from 64 random bits: the sum of four uniform 16-bit values,
// centered (Irwin-Hall with n = 4). Range [-131070, 131070] in steps of 2, mean 0, standard
// deviation kIrwinHallStd. Tails stop at 3.46 sigma, which suits weight initialisation.
constexpr int32_t IrwinHall4(uint64_t bits) {
  int32_t sum = 0;
  for (int k = 0; k < 4; ++k) sum += static_cast<int32_t>((bits >> (16 * k)) & 0xFFFF);
  return 2 * sum - 4 * 65535;
}
// sqrt(4 * (65536^2 - 1) / 12) * 2: the standard deviation of IrwinHall4.
inline constexpr double kIrwinHallStd = 75674.45447441297;

}  // namespace bitfleet::synth

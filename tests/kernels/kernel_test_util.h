// Shared pieces of the kernel equivalence harness: the variants to test, random tensors in every
// weight type, and sentinel-guarded output buffers.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/kernel_table.h"

namespace bitfleet::kernels::testing {

// Every variant this CPU runs; variants it lacks are reported on stderr once (with the reason)
// and skipped.
std::vector<const cpu::CpuKernels*> VariantsToTest();

// A GGUF tensor of `rows` × `cols` in `type` built from random data by the reference quantizer
// (kernels/ref/quant.h). For TQ2_0 and I2_S the code bytes are then overwritten with random bytes
// so the unused code 3 is exercised too. F32/F16/BF16 hold random values.
std::vector<uint8_t> RandomTensor(DType type, uint64_t cols, uint64_t rows, std::mt19937_64& rng);

// Random activations: mostly N(0, 1), some outliers, and occasionally an all-zero token.
std::vector<float> RandomActivations(int n_tokens, uint64_t cols, std::mt19937_64& rng);

// Block size that `cols` must be a multiple of for `type` (1 for float types).
uint64_t ColsMultiple(DType type);

// A float output with `kGuard` sentinel floats on both sides; Intact() checks they were not
// written, Written() that every output element was.
class GuardedFloats {
 public:
  static constexpr size_t kGuard = 67;
  static constexpr uint32_t kSentinelBits = 0x7fa5a5a5u;  // a NaN no kernel produces

  explicit GuardedFloats(size_t n) : n_(n), buf_(n + 2 * kGuard) { Reset(); }
  float* data() { return buf_.data() + kGuard; }
  const float* data() const { return buf_.data() + kGuard; }
  size_t size() const { return n_; }
  void Reset() {
    for (float& f : buf_) std::memcpy(&f, &kSentinelBits, sizeof(f));
  }
  bool Intact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (!IsSentinel(buf_[i]) || !IsSentinel(buf_[kGuard + n_ + i])) return false;
    }
    return true;
  }
  bool Written() const {
    for (size_t i = 0; i < n_; ++i) {
      if (IsSentinel(data()[i])) return false;
    }
    return true;
  }

 private:
  static bool IsSentinel(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    return u == kSentinelBits;
  }
  size_t n_;
  std::vector<float> buf_;
};

// The same for integer elements: f16 KV pools (uint16_t bits) and int8 KV pools.
template <typename T, T kSentinel>
class GuardedInts {
 public:
  static constexpr size_t kGuard = 61;
  explicit GuardedInts(size_t n) : n_(n), buf_(n + 2 * kGuard, kSentinel) {}
  T* data() { return buf_.data() + kGuard; }
  bool Intact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (buf_[i] != kSentinel || buf_[kGuard + n_ + i] != kSentinel) return false;
    }
    return true;
  }

 private:
  size_t n_;
  std::vector<T> buf_;
};
using GuardedHalves = GuardedInts<uint16_t, 0x7e5a>;
using GuardedCodes = GuardedInts<int8_t, 0x5a>;

}  // namespace bitfleet::kernels::testing

// Helpers shared by the reference-codec tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/ref/quant.h"

namespace bitfleet::kernels::ref::testing {

// Quantizes a tensor of rows of `row_elems`, failing the test on error.
inline std::vector<uint8_t> Quantize(DType type, const std::vector<float>& src, uint64_t row_elems) {
  auto bytes = TensorBytes(type, row_elems, src.size());
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  std::vector<uint8_t> out(bytes.ok() ? *bytes : 0, 0xEE);
  const Status status = QuantizeTensor(type, src, row_elems, out);
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

inline std::vector<float> Dequantize(DType type, const std::vector<uint8_t>& src, uint64_t row_elems,
                                     size_t elems) {
  std::vector<float> out(elems, -12345.0f);
  const Status status = DequantizeTensor(type, src, row_elems, out);
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

// Random ternary values {-1, 0, +1} times `scale`, about a third each.
inline std::vector<float> RandomTernary(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pick(-1, 1);
  std::vector<float> out(n);
  for (float& v : out) v = static_cast<float>(pick(rng)) * scale;
  return out;
}

inline std::vector<float> RandomNormal(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

}  // namespace bitfleet::kernels::ref::testing

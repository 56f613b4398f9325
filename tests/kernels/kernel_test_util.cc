#include "tests/kernels/kernel_test_util.h"

#include <cstdio>

#include "core/fp16.h"
#include "kernels/ref/quant.h"

namespace bitfleet::kernels::testing {

std::vector<const cpu::CpuKernels*> VariantsToTest() {
  std::vector<const cpu::CpuKernels*> out;
  for (cpu::CpuVariant v :
       {cpu::CpuVariant::kScalar, cpu::CpuVariant::kAvx2, cpu::CpuVariant::kAvx512Vnni, cpu::CpuVariant::kAmx}) {
    const cpu::CpuKernels* k = cpu::KernelsFor(v);
    if (k != nullptr) {
      out.push_back(k);
    } else {
      std::fprintf(stderr, "[kernels] skipping variant %s: this CPU (or build) does not support it\n",
                   cpu::CpuVariantString(v));
    }
  }
  return out;
}

uint64_t ColsMultiple(DType type) { return Info(type).block_elems; }

std::vector<float> RandomActivations(int n_tokens, uint64_t cols, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens) * cols);
  for (int t = 0; t < n_tokens; ++t) {
    const bool zero_token = unit(rng) < 0.03f;
    const float scale = std::exp(normal(rng));  // tokens differ in magnitude
    for (uint64_t c = 0; c < cols; ++c) {
      float v = zero_token ? 0.0f : normal(rng) * scale;
      if (!zero_token && unit(rng) < 0.002f) v *= 20.0f;  // activation outliers
      x[t * cols + c] = v;
    }
  }
  return x;
}

std::vector<uint8_t> RandomTensor(DType type, uint64_t cols, uint64_t rows, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> trit(-1, 1);
  std::uniform_int_distribution<int> byte(0, 255);
  const uint64_t n = rows * cols;
  std::vector<float> values(n);
  if (IsTernary(type)) {
    // Ternary values times a per-row scale, with some all-zero rows. A quarter of the tensors
    // also have all-zero 256-blocks inside rows (their block scale is 0: a kernel that relies on
    // one scale per row must ignore them), and another quarter a scale per 256-block (rows
    // whose blocks disagree: no per-row scale).
    const int mode = byte(rng) % 4;
    for (uint64_t r = 0; r < rows; ++r) {
      const float s = std::exp(normal(rng)) * 0.05f;
      const bool zero_row = byte(rng) < 4;
      float block_scale = s;
      bool zero_block = false;
      for (uint64_t c = 0; c < cols; ++c) {
        if (c % 256 == 0) {
          zero_block = mode == 1 && byte(rng) < 64;
          if (mode == 2) block_scale = s * (1.0f + static_cast<float>(byte(rng)) / 64.0f);
        }
        values[r * cols + c] = zero_row || zero_block ? 0.0f : trit(rng) * block_scale;
      }
    }
  } else {
    for (uint64_t i = 0; i < n; ++i) values[i] = normal(rng) * 0.1f + (type == DType::kQ4_1 ? 0.05f : 0.0f);
  }
  std::vector<uint8_t> bytes(TensorBytes(type, cols, n).value());
  const Status st = ref::QuantizeTensor(type, values, cols, bytes);
  if (!st.ok()) {
    std::fprintf(stderr, "QuantizeTensor failed: %s\n", std::string(st.message()).c_str());
    std::abort();
  }
  if (type == DType::kTQ2_0) {
    for (uint64_t b = 0; b < n / 256; ++b) {
      if (byte(rng) < 64) {
        for (int i = 0; i < 64; ++i) bytes[b * 66 + i] = static_cast<uint8_t>(byte(rng));
      }
    }
  } else if (type == DType::kI2_S) {
    for (uint64_t i = 0; i < n / 4; ++i) {
      if (byte(rng) < 32) bytes[i] = static_cast<uint8_t>(byte(rng));
    }
  }
  return bytes;
}

}  // namespace bitfleet::kernels::testing

// Cross-implementation check: digests of the bytes that gguf-py 0.19.0's quants module (the
// numpy port of ggml's reference quantizers, which llama.cpp tests bit-exact against libggml)
// writes for a fixed input. The input is integer arithmetic plus one correctly rounded double
// division, so it is the same bits in numpy and here. Regenerate with:
//   i = np.arange(4096); x = ((((i*7919) % 2003) - 1001) * (1 + (i//32) % 7) / 2570.0).astype(np.float32)
//   x[512:768] = 0; b = gguf.quants.quantize(x.reshape(4, 1024), qtype)   -> FNV-1a 64 of b
// (ternary input: ((i*31) % 3 - 1) * 0.046875 as float32.)
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ref/quant.h"
#include "tests/unit/kernels/ref/quant_test_util.h"

namespace bitfleet::kernels::ref {
namespace {

using ::bitfleet::kernels::ref::testing::Quantize;

constexpr uint64_t kRow = 1024;
constexpr int kElems = 4096;

uint64_t Fnv1a64(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::vector<float> GoldenInput() {
  std::vector<float> x(kElems);
  for (int i = 0; i < kElems; ++i) {
    const int64_t num = static_cast<int64_t>((static_cast<int64_t>(i) * 7919) % 2003 - 1001) * (1 + (i / 32) % 7);
    x[i] = static_cast<float>(static_cast<double>(num) / 2570.0);
  }
  for (int i = 512; i < 768; ++i) x[i] = 0.0f;  // an all-zero 256 block
  return x;
}

std::vector<float> GoldenTernaryInput() {
  std::vector<float> x(kElems);
  for (int i = 0; i < kElems; ++i) x[i] = static_cast<float>((i * 31) % 3 - 1) * 0.046875f;
  return x;
}

TEST(QuantGoldenTest, InputMatchesGenerator) {
  const std::vector<float> x = GoldenInput();
  EXPECT_EQ(x[0], -0.38949415f);
  EXPECT_EQ(x[100], -0.4451362f);
}

struct Golden {
  DType type;
  uint64_t digest;
  size_t bytes;
};

TEST(QuantGoldenTest, MatchesGgufPyReference) {
  const std::vector<float> x = GoldenInput();
  const Golden goldens[] = {
      {DType::kQ8_0, 0xb48467c51aec1d93ull, 4352}, {DType::kQ4_0, 0x98aa9424b64f15fdull, 2304},
      {DType::kQ4_1, 0xe577547afd46bc99ull, 2560}, {DType::kTQ1_0, 0xea70f69130d929eeull, 864},
      {DType::kTQ2_0, 0x3de8c7d2412a23e7ull, 1056}, {DType::kBF16, 0x30eda68ad1c4f879ull, 8192},
      {DType::kF16, 0x0084c290d14ab07eull, 8192},
  };
  for (const Golden& g : goldens) {
    const std::vector<uint8_t> bytes = Quantize(g.type, x, kRow);
    EXPECT_EQ(bytes.size(), g.bytes) << DTypeName(g.type);
    EXPECT_EQ(Fnv1a64(bytes), g.digest) << DTypeName(g.type);
  }
}

TEST(QuantGoldenTest, TernaryInputMatchesGgufPyReference) {
  const std::vector<float> x = GoldenTernaryInput();
  EXPECT_EQ(Fnv1a64(Quantize(DType::kTQ1_0, x, kRow)), 0x743525ace9d8637dull);
  EXPECT_EQ(Fnv1a64(Quantize(DType::kTQ2_0, x, kRow)), 0x4dd15c100fdaee54ull);
}

}  // namespace
}  // namespace bitfleet::kernels::ref

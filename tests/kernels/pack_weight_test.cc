// PackWeight input validation, sizes, the I2_S/TQ2_0 code-3 conventions on hand-built bytes, and
// every layout's repacking against the reference block decoder.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/kernel_table.h"
#include "kernels/cpu/matmul_cpu.h"
#include "kernels/cpu/packed_weight.h"
#include "kernels/matmul.h"
#include "kernels/ref/matmul_ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace bitfleet::kernels {
namespace {

TEST(PackWeight, RejectsBadSizesAndTypes) {
  std::vector<uint8_t> bytes(66 * 2);
  EXPECT_TRUE(PackWeight(DType::kTQ2_0, 256, 2, bytes).ok());
  EXPECT_EQ(PackWeight(DType::kTQ2_0, 256, 3, bytes).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWeight(DType::kTQ2_0, 128, 2, bytes).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWeight(DType::kTQ2_0, 0, 2, bytes).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWeight(DType::kTQ2_0, 256, 0, bytes).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWeight(DType::kI8, 4, 1, std::vector<uint8_t>(4)).status().code(), absl::StatusCode::kUnimplemented);
  // I2_S needs its 32-byte tail.
  EXPECT_FALSE(PackWeight(DType::kI2_S, 128, 1, std::vector<uint8_t>(32)).ok());
  EXPECT_TRUE(PackWeight(DType::kI2_S, 128, 1, std::vector<uint8_t>(64)).ok());
  // Overflowing shapes are rejected, not wrapped.
  EXPECT_FALSE(PackWeight(DType::kF32, uint64_t{1} << 40, uint64_t{1} << 40, bytes).ok());
}

TEST(PackWeight, ReportsStreamAndResidentBytes) {
  auto w = PackWeight(DType::kQ4_0, 96, 3, std::vector<uint8_t>(18 * 3 * 3));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->stream_bytes(), 18u * 9);
  EXPECT_EQ((*w)->rows(), 3u);
  EXPECT_EQ((*w)->cols(), 96u);
  EXPECT_EQ((*w)->type(), DType::kQ4_0);
  // One 128-element group per row (64 bytes) plus 4 fp16 scales.
  EXPECT_EQ((*w)->bytes(), 3u * (64 + 8));
}

// out = sum of a row's weights against all-ones activations (q = 127, absmax = 1).
float RowSumWithOnes(DType type, uint64_t cols, const std::vector<uint8_t>& bytes) {
  auto w = PackWeight(type, cols, 1, bytes);
  EXPECT_TRUE(w.ok()) << w.status();
  std::vector<float> x(cols, 1.0f);
  std::vector<float> absmax = {1.0f};
  ThreadPool pool(1);
  float out = 0.0f;
  QuantizedActivations act;
  QuantizeActivations(x.data(), 1, cols, absmax.data(), &act);
  MatMulQuantized(**w, act, &out, pool);
  return out;
}

TEST(PackWeight, TernaryCodeThreeConventions) {
  // TQ2_0: code 3 decodes as +2 (ggml), so 256 codes of 3 with d = 1 sum to 512.
  std::vector<uint8_t> tq2(66, 0xff);
  const uint16_t one = FloatToHalf(1.0f);
  std::memcpy(&tq2[64], &one, 2);
  EXPECT_NEAR(RowSumWithOnes(DType::kTQ2_0, 256, tq2), 512.0f, 1e-3);
  // I2_S: code 3 decodes as 0 (bitnet.cpp); code 2 is +1. Scale 0.5 in the tail.
  std::vector<uint8_t> i2s(32 + 32, 0xff);
  for (int j = 0; j < 16; ++j) i2s[j] = 0xaa;  // 16 bytes × 4 elements of +1
  const float half = 0.5f;
  std::memcpy(&i2s[32], &half, 4);
  EXPECT_NEAR(RowSumWithOnes(DType::kI2_S, 128, i2s), 32.0f, 1e-4);
}

// Every byte of a view's arrays: codes, scales (ternary), fp16 d / m (Q4, Q8), row scales.
void ExpectSameView(const cpu::WeightView& a, const cpu::WeightView& b) {
  ASSERT_EQ(a.rows, b.rows);
  ASSERT_EQ(a.row_bytes, b.row_bytes);
  ASSERT_EQ(a.blocks, b.blocks);
  const auto same = [](const void* x, const void* y, uint64_t bytes, const char* what) {
    ASSERT_EQ(x == nullptr, y == nullptr) << what;
    if (x != nullptr) {
      EXPECT_EQ(std::memcmp(x, y, bytes), 0) << what;
    }
  };
  same(a.data, b.data, a.rows * a.row_bytes, "codes");
  same(a.scales, b.scales, a.rows * a.blocks * sizeof(float), "scales");
  same(a.half_d, b.half_d, a.rows * a.blocks * sizeof(uint16_t), "half_d");
  same(a.half_m, b.half_m, a.rows * a.blocks * sizeof(uint16_t), "half_m");
  same(a.row_scales, b.row_scales, a.rows * sizeof(float), "row_scales");
}

// Repacking on a pool's threads writes exactly what one thread writes, for every quantized
// layout, at row counts below, at and above the chunks the rows are shared out in.
TEST(PackWeight, PoolThreadsPackTheSameBytes) {
  std::mt19937_64 rng(0x9AC4);
  ThreadPool pool(3);
  for (const DType type : {DType::kTQ2_0, DType::kTQ1_0, DType::kI2_S, DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
    for (const uint64_t rows : {1u, 127u, 128u, 129u, 1000u}) {
      SCOPED_TRACE(std::string(DTypeName(type)) + " " + std::to_string(rows) + " rows");
      const uint64_t cols = 2 * testing::ColsMultiple(type);
      const std::vector<uint8_t> bytes = testing::RandomTensor(type, cols, rows, rng);
      auto serial = PackWeight(type, cols, rows, bytes);
      auto pooled = PackWeight(type, cols, rows, bytes, &pool);
      ASSERT_TRUE(serial.ok()) << serial.status();
      ASSERT_TRUE(pooled.ok()) << pooled.status();
      EXPECT_EQ((*pooled)->bytes(), (*serial)->bytes());
      ExpectSameView(cpu::AsCpuPacked(**pooled)->view(), cpu::AsCpuPacked(**serial)->view());
    }
  }
}

// Every runtime code of a packed 256-element-block ternary weight (byte e % 64 of its block,
// bits 2 (e / 64)) is the block decoder's w + 1, and every block scale the decoder's d.
void ExpectTernaryBlocksAsDecoded(DType type, const std::vector<uint8_t>& bytes, uint64_t cols, uint64_t rows,
                                  const cpu::WeightView& v) {
  ref::IntBlock block;
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t b = 0; b < cols / 256; ++b) {
      ref::DecodeIntBlock(type, bytes.data(), r * (cols / 256) + b, 0.0f, &block);
      ASSERT_EQ(std::memcmp(&v.scales[r * v.blocks + b], &block.d, sizeof(float)), 0) << "row " << r << " block " << b;
      const uint8_t* codes = v.data + r * v.row_bytes + b * 64;
      for (int e = 0; e < 256; ++e) {
        const int code = (codes[e % 64] >> (2 * (e / 64))) & 3;
        ASSERT_EQ(code, block.w[e] + 1) << "row " << r << " block " << b << " element " << e;
      }
    }
  }
}

// TQ2_0 is repacked by permuting its 2-bit fields, without the block decoder: every element's
// runtime code (byte e % 64 of its 256-block, bits 2 (e / 64)) must be the decoder's w + 1, and
// every block scale the decoder's d, over random bytes (all four codes, any scale bits).
TEST(PackWeight, Tq2PermutationMatchesTheBlockDecoder) {
  std::mt19937_64 rng(0x7102);
  constexpr uint64_t kCols = 768;
  constexpr uint64_t kRows = 300;
  std::vector<uint8_t> bytes(kRows * (kCols / 256) * 66);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  for (size_t blk = 0; blk < bytes.size() / 66; ++blk) {  // finite scales: fp16 exponent below 31
    bytes[blk * 66 + 65] &= 0x7b;
  }
  ThreadPool pool(2);
  auto w = PackWeight(DType::kTQ2_0, kCols, kRows, bytes, &pool);
  ASSERT_TRUE(w.ok()) << w.status();
  const cpu::WeightView& v = cpu::AsCpuPacked(**w)->view();
  ExpectTernaryBlocksAsDecoded(DType::kTQ2_0, bytes, kCols, kRows, v);
}

// TQ1_0 is repacked from its base-3 digits through a byte -> trits table, without the block
// decoder: every element's runtime code must be the decoder's w + 1 and every block scale the
// decoder's d. The first 256 blocks hold every byte value at every position (qs and qh alike, so
// the whole table is checked wherever it is used); the rest are random.
TEST(PackWeight, Tq1DigitsMatchTheBlockDecoder) {
  std::mt19937_64 rng(0x7101);
  constexpr uint64_t kBlockBytes = 54;
  constexpr uint64_t kCols = 768;
  constexpr uint64_t kRows = 300;
  std::vector<uint8_t> bytes(kRows * (kCols / 256) * kBlockBytes);
  for (uint64_t blk = 0; blk < bytes.size() / kBlockBytes; ++blk) {
    for (uint64_t j = 0; j < kBlockBytes; ++j) {
      bytes[blk * kBlockBytes + j] = static_cast<uint8_t>(blk < 256 ? blk + 97 * j : rng());
    }
    bytes[blk * kBlockBytes + 53] &= 0x7b;  // finite scales: fp16 exponent below 31
  }
  ThreadPool pool(2);
  auto w = PackWeight(DType::kTQ1_0, kCols, kRows, bytes, &pool);
  ASSERT_TRUE(w.ok()) << w.status();
  const cpu::WeightView& v = cpu::AsCpuPacked(**w)->view();
  ASSERT_EQ(v.blocks, kCols / 256);
  ExpectTernaryBlocksAsDecoded(DType::kTQ1_0, bytes, kCols, kRows, v);
}

// I2_S is repacked by moving its fields too (code 3, which decodes to 0, becoming code 1): every
// element's runtime code must be the decoder's w + 1, the padding of a row that ends in half a
// runtime block code 0 (as the element-wise packer left it), and every block scale the tensor's.
TEST(PackWeight, I2sPermutationMatchesTheBlockDecoder) {
  std::mt19937_64 rng(0x1252);
  constexpr uint64_t kCols = 384;  // three I2_S blocks: a whole runtime block and half of one
  constexpr uint64_t kRows = 150;
  std::vector<uint8_t> bytes(kRows * (kCols / 128) * 32 + 32);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  const float tensor_scale = 0.75f;
  std::memcpy(bytes.data() + bytes.size() - 32, &tensor_scale, sizeof(tensor_scale));
  ThreadPool pool(2);
  auto w = PackWeight(DType::kI2_S, kCols, kRows, bytes, &pool);
  ASSERT_TRUE(w.ok()) << w.status();
  const cpu::WeightView& v = cpu::AsCpuPacked(**w)->view();
  ASSERT_EQ(v.blocks, 2u);
  ref::IntBlock block;
  for (uint64_t r = 0; r < kRows; ++r) {
    for (uint64_t b = 0; b < v.blocks; ++b) EXPECT_EQ(v.scales[r * v.blocks + b], tensor_scale);
    for (uint64_t e = 0; e < v.blocks * 256; ++e) {
      const int code = (v.data[r * v.row_bytes + (e / 256) * 64 + e % 64] >> (2 * ((e % 256) / 64))) & 3;
      if (e >= kCols) {
        ASSERT_EQ(code, 0) << "row " << r << " padding element " << e;
        continue;
      }
      ref::DecodeIntBlock(DType::kI2_S, bytes.data(), r * (kCols / 128) + e / 128, tensor_scale, &block);
      ASSERT_EQ(code, block.w[e % 128] + 1) << "row " << r << " element " << e;
    }
  }
}

// Q4_0 / Q4_1 nibbles are moved as stored: every element's runtime nibble (byte e % 64 of its
// 128-group, high for e % 128 >= 64) must be the decoder's w + 8 (Q4_0) or w (Q4_1), and the
// fp16 d and m bits the block's, over random bytes and a row that ends in a partial group.
TEST(PackWeight, Q4NibblesMatchTheBlockDecoder) {
  std::mt19937_64 rng(0x0404);
  constexpr uint64_t kCols = 160;  // five blocks: one whole 128-group and a quarter of another
  constexpr uint64_t kRows = 200;
  for (const DType type : {DType::kQ4_0, DType::kQ4_1}) {
    SCOPED_TRACE(DTypeName(type));
    const uint64_t block_bytes = type == DType::kQ4_1 ? 20 : 18;
    std::vector<uint8_t> bytes(kRows * (kCols / 32) * block_bytes);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    ThreadPool pool(2);
    auto w = PackWeight(type, kCols, kRows, bytes, &pool);
    ASSERT_TRUE(w.ok()) << w.status();
    const cpu::WeightView& v = cpu::AsCpuPacked(**w)->view();
    const int zero_point = type == DType::kQ4_1 ? 0 : 8;
    ref::IntBlock block;
    for (uint64_t r = 0; r < kRows; ++r) {
      for (uint64_t b = 0; b < kCols / 32; ++b) {
        const uint64_t index = r * (kCols / 32) + b;
        ref::DecodeIntBlock(type, bytes.data(), index, 0.0f, &block);
        uint16_t d = 0;
        std::memcpy(&d, bytes.data() + index * block_bytes, 2);
        ASSERT_EQ(v.half_d[r * v.blocks + b], d) << "row " << r << " block " << b;
        if (type == DType::kQ4_1) {
          uint16_t m = 0;
          std::memcpy(&m, bytes.data() + index * block_bytes + 2, 2);
          ASSERT_EQ(v.half_m[r * v.blocks + b], m) << "row " << r << " block " << b;
        }
        for (int i = 0; i < 32; ++i) {
          const uint64_t e = 32 * b + i;
          const uint8_t byte = v.data[r * v.row_bytes + (e / 128) * 64 + e % 64];
          const int nibble = (byte >> (e % 128 >= 64 ? 4 : 0)) & 15;
          ASSERT_EQ(nibble, block.w[i] + zero_point) << "row " << r << " element " << e;
        }
      }
    }
  }
}

// Q8_0 rows of an odd number of blocks are padded to an even one. The packer starts from
// unfilled memory, so it must write the padding block itself (codes 0, d 0: a stale NaN scale
// would poison every dot product). Freeing 0xA5-filled buffers of the packed arrays' sizes first
// makes stale bytes there likely; the real blocks must be the input's codes and d bits.
TEST(PackWeight, Q8PaddingIsWrittenNotInherited) {
  std::mt19937_64 rng(0x0808);
  constexpr uint64_t kCols = 96;  // three blocks, padded to four
  constexpr uint64_t kRows = 200;
  std::vector<uint8_t> bytes(kRows * (kCols / 32) * 34);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  std::vector<AlignedArray<uint8_t>> fences;  // kept, so freed buffers are not merged back into the heap top
  for (const uint64_t dirty_bytes : {kRows * 4 * 32, kRows * 4 * sizeof(uint16_t)}) {
    AlignedArray<uint8_t> dirty = AllocateAligned<uint8_t>(dirty_bytes);
    std::memset(dirty.get(), 0xA5, dirty_bytes);
    fences.push_back(AllocateAligned<uint8_t>(64));
  }
  auto w = PackWeight(DType::kQ8_0, kCols, kRows, bytes);
  ASSERT_TRUE(w.ok()) << w.status();
  const cpu::WeightView& v = cpu::AsCpuPacked(**w)->view();
  ASSERT_EQ(v.blocks, 4u);
  for (uint64_t r = 0; r < kRows; ++r) {
    for (uint64_t b = 0; b < kCols / 32; ++b) {
      const uint8_t* src = bytes.data() + (r * (kCols / 32) + b) * 34;
      uint16_t d = 0;
      std::memcpy(&d, src, 2);
      ASSERT_EQ(v.half_d[r * v.blocks + b], d) << "row " << r << " block " << b;
      ASSERT_EQ(std::memcmp(v.data + r * v.row_bytes + b * 32, src + 2, 32), 0) << "row " << r << " block " << b;
    }
    ASSERT_EQ(v.half_d[r * v.blocks + 3], 0) << "row " << r;
    for (int i = 0; i < 32; ++i) ASSERT_EQ(v.data[r * v.row_bytes + 96 + i], 0) << "row " << r << " byte " << i;
  }
}

TEST(MatMul, MismatchedActivationsGiveNaNNotACrash) {
  auto w = PackWeight(DType::kQ8_0, 64, 2, std::vector<uint8_t>(34 * 4));
  ASSERT_TRUE(w.ok());
  std::vector<float> x(32, 1.0f);
  std::vector<float> absmax = {1.0f};
  QuantizedActivations act;
  QuantizeActivations(x.data(), 1, 32, absmax.data(), &act);
  ThreadPool pool(1);
  float out[2] = {0.0f, 0.0f};
  MatMulQuantized(**w, act, out, pool);
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1]));
}

TEST(MatMul, NoAllocationGrowthAfterReserve) {
  QuantizedActivations act;
  act.Reserve(8, 1000);
  const int8_t* q = act.q.get();
  std::vector<float> x(8 * 1000, 0.5f);
  std::vector<float> absmax(8, 1.0f);
  QuantizeActivations(x.data(), 8, 1000, absmax.data(), &act);
  QuantizeActivations(x.data(), 3, 640, absmax.data(), &act);
  EXPECT_EQ(act.q.get(), q) << "reserved buffers are reused";
  EXPECT_EQ(reinterpret_cast<uintptr_t>(act.q.get()) % 64, 0u);
}

}  // namespace
}  // namespace bitfleet::kernels

// The CPU runtime layouts of PackedWeight (docs/kernels.md "Runtime layouts"). One layout per
// type family, shared by every variant, so a weight packed once runs on any of them:
//
// - Ternary (TQ1_0, TQ2_0, I2_S): 2-bit codes c = w + 1 in 256-element blocks of 64 bytes; byte
//   k of a block holds elements k, k+64, k+128, k+192 at bits 0, 2, 4, 6, so one 512-bit load
//   unpacks with shift+mask into four vectors of consecutive elements. One float scale per
//   (row, block): the TQ block scale, or I2_S's tensor scale. Rows are padded to whole blocks
//   with code 0 (activations are zero there, so padding adds nothing). When every row's
//   nonzero blocks share one scale (BitNet), also that scale per row (WeightView::row_scales).
// - Q4_0 / Q4_1: 4-bit codes (Q4_0: w + 8, Q4_1: the nibble) in 128-element groups of 64 bytes;
//   byte k holds element k (low nibble) and k+64 (high nibble). fp16 d (and m) per 32-block in
//   separate arrays; rows padded to whole groups with scale 0.
// - Q8_0: the int8 codes, 32 per block, rows padded to an even number of blocks; fp16 d apart.
// - F32 / F16 / BF16: the values row-major, unchanged.
//
// The kernels compute sum_b d_b * sum_i c_i q_i + sum_b e_b * S_b, where S_b is the activation
// block sum and e_b = m_b - z * d_b with the zero point z = 1 (ternary), 8 (Q4_0), 0 (Q4_1);
// Q8_0 kernels handle their sign per variant. Internal to kernels/.
#pragma once

#include <cstdint>

#include "kernels/cpu/kernel_table.h"
#include "kernels/matmul.h"

namespace bitfleet::kernels::cpu {

enum class LayoutKind { kTernary, kQ4_0, kQ4_1, kQ8_0, kF32, kF16, kBF16 };

inline constexpr uint64_t kTernaryBlock = 256;  // elements per ternary runtime block
inline constexpr uint64_t kTernaryBlockBytes = 64;
inline constexpr uint64_t kQ4Group = 128;  // elements per Q4 runtime group (4 blocks)
inline constexpr uint64_t kQ4GroupBytes = 64;

class CpuPackedWeight final : public PackedWeight {
 public:
  DType type() const override { return type_; }
  uint64_t rows() const override { return view_.rows; }
  uint64_t cols() const override { return view_.cols; }
  uint64_t bytes() const override { return resident_bytes_; }
  uint64_t stream_bytes() const override { return stream_bytes_; }

  LayoutKind kind() const { return kind_; }
  const WeightView& view() const { return view_; }

 private:
  friend StatusOr<std::unique_ptr<PackedWeight>> bitfleet::kernels::PackWeight(DType, uint64_t, uint64_t,
                                                                               std::span<const uint8_t>, ThreadPool*);
  CpuPackedWeight() = default;

  DType type_ = DType::kF32;
  LayoutKind kind_ = LayoutKind::kF32;
  WeightView view_;
  uint64_t resident_bytes_ = 0;
  uint64_t stream_bytes_ = 0;
  AlignedArray<uint8_t> data_;
  AlignedArray<float> scales_;
  AlignedArray<float> row_scales_;  // ternary with uniform row scales only
  AlignedArray<uint16_t> half_d_;
  AlignedArray<uint16_t> half_m_;
};

// The CPU form of `w`, or null when `w` was not packed by PackWeight.
const CpuPackedWeight* AsCpuPacked(const PackedWeight& w);

}  // namespace bitfleet::kernels::cpu

// PackWeight: GGUF bytes -> the CPU runtime layouts of packed_weight.h.
#include "kernels/cpu/packed_weight.h"

#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/checked_math.h"
#include "core/fp16.h"
#include "kernels/ref/quant.h"

namespace bitfleet::kernels {
namespace cpu {
namespace {

// Columns and rows beyond this are rejected (no real model comes close; keeps every product
// below in 64 bits and row offsets in int64).
constexpr uint64_t kMaxDim = uint64_t{1} << 31;

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Runs fn(begin, end) over the rows [0, rows): on the pool's threads in chunks when there is a
// pool with more than one thread and enough rows, else inline. Each row is written by exactly
// one call, so the result does not depend on the split.
void ForRows(ThreadPool* pool, uint64_t rows, FunctionRef<void(int64_t, int64_t)> fn) {
  constexpr int64_t kRowsPerChunk = 64;
  if (pool == nullptr || pool->size() == 1 || rows < 2 * kRowsPerChunk) {
    fn(0, static_cast<int64_t>(rows));
    return;
  }
  pool->ParallelForDynamic(static_cast<int64_t>(rows), kRowsPerChunk, fn);
}

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// A TQ2_0 block (64 code bytes, fp16 d) straight into a runtime block: both hold c = w + 1 in
// 2-bit fields (TQ2_0's code 3, decoded as +2, stays 3), so repacking is a permutation of the
// fields. TQ2_0 keeps element 128h + 32k + m in byte 32h + m at bits 2k; the runtime keeps
// element e in byte e % 64 at bits 2 (e / 64). So source bytes m and 32 + m (h = 0, 1) fill
// runtime bytes m (their fields k = 0, 2) and 32 + m (k = 1, 3).
constexpr uint64_t kTq2BlockBytes = 66;
void PermuteTq2Block(const uint8_t* src, uint8_t* dst, float* scale) {
  for (int m = 0; m < 32; ++m) {
    const uint32_t a = src[m];
    const uint32_t b = src[32 + m];
    dst[m] = static_cast<uint8_t>((a & 0x03) | ((a >> 2) & 0x0C) | ((b & 0x03) << 4) | ((b << 2) & 0xC0));
    dst[32 + m] = static_cast<uint8_t>(((a >> 2) & 0x03) | ((a >> 4) & 0x0C) | ((b << 2) & 0x30) | (b & 0xC0));
  }
  *scale = HalfToFloat(LoadU16(src + 64));
}

// Two I2_S blocks (32 code bytes and 128 elements each; `second` null when the row ends after
// `first`) into one runtime block. I2_S byte m holds elements m + 32f (f = 0..3) of its block at
// bits 6 - 2f, codes 0, 1, 2, 3 meaning -1, 0, +1, 0; the runtime code is w + 1, so a 3 becomes
// 1 (its high bit cleared), and element E of the 256-block moves to byte E % 64, bits 2 (E / 64):
// runtime byte m takes fields f = 0, 2 of the two blocks' byte m, byte 32 + m fields 1, 3.
// Missing elements keep code 0, as the element-wise packer leaves them (their activations are 0).
constexpr uint64_t kI2sBlockBytes = 32;
void PermuteI2sBlocks(const uint8_t* first, const uint8_t* second, uint8_t* dst) {
  const auto canonical = [](uint32_t x) { return x & ~((x & (x >> 1) & 0x55u) << 1); };
  const auto field = [](uint32_t x, int f) { return (x >> (6 - 2 * f)) & 3u; };
  for (int m = 0; m < 32; ++m) {
    const uint32_t a = canonical(first[m]);
    const uint32_t b = second != nullptr ? canonical(second[m]) : 0;
    dst[m] = static_cast<uint8_t>(field(a, 0) | field(a, 2) << 2 | field(b, 0) << 4 | field(b, 2) << 6);
    dst[32 + m] = static_cast<uint8_t>(field(a, 1) | field(a, 3) << 2 | field(b, 1) << 4 | field(b, 3) << 6);
  }
}

// TQ1_0 keeps a block's 256 codes c = w + 1 as base-3 digits (trits): 48 bytes qs of five trits,
// 4 bytes qh of four, then fp16 d. A byte holds the base-3 number v (trit 0 most significant) as
// ceil(v * 256 / 243), so trit n is ((uint8_t)(byte * 3^n) * 3) >> 8: the multiply brings trit n
// to the top of the byte, the fixed-point * 3 reads it (ggml's decoder, and ref's Tq1Trit).
// kTq1Trits[x][n] is that digit for every byte x (the packer's tables below are built from it).
// Any byte decodes (to digits 0..2), not only those a quantizer writes; qh bytes use trits 0..3.
using Tq1Trits = std::array<uint8_t, 5>;
constexpr std::array<Tq1Trits, 256> kTq1Trits = [] {
  std::array<Tq1Trits, 256> table{};
  for (uint32_t x = 0; x < 256; ++x) {
    uint32_t pow3 = 1;
    for (int n = 0; n < 5; ++n, pow3 *= 3) {
      const uint32_t shifted = (x * pow3) & 0xFF;
      table[x][n] = static_cast<uint8_t>((shifted * 3) >> 8);
    }
  }
  return table;
}();
static_assert(kTq1Trits[0] == Tq1Trits{0, 0, 0, 0, 0} && kTq1Trits[255] == Tq1Trits{2, 2, 2, 2, 2});
static_assert(kTq1Trits[128] == Tq1Trits{1, 1, 1, 1, 1});  // 121 = 11111 in base 3: ceil(121 * 256 / 243) = 128

// A TQ1_0 block (54 bytes) straight into a runtime block (element e in byte e % 64, bits
// 2 (e / 64)). TQ1_0 puts trit n of qs[m] (m < 32) at element m + 32n, of qs[32 + m] (m < 16) at
// 160 + m + 16n, of qh[m] (m < 4) at 240 + m + 4n. So for m < 16 the runtime bytes m, 16 + m,
// 32 + m and 48 + m (a column: bytes 0..3 of a uint32, byte k being runtime byte 16k + m) take
//   qs[m]:      trits 0, 2, 4 into byte 0 (bits 0, 2, 4), trits 1, 3 into byte 2 (bits 0, 2);
//   qs[16 + m]: the same into bytes 1 and 3;
//   qs[32 + m]: trit 2 into byte 0 (bits 6), 3 into byte 1 (bits 6), 0 and 4 into byte 2 (bits
//               4, 6), 1 into byte 3 (bits 4);
//   qh[m % 4]:  trit m / 4 into byte 3 (bits 6).
// Tq1Columns holds what each byte value contributes in each of the three qs roles, so a column
// is three lookups ORed together (~30 ns a block here, against ~50 for a lookup per trit and
// ~10 for PermuteTq2Block). Every byte of `dst` is written (no reliance on a zeroed destination).
struct Tq1Columns {
  std::array<uint32_t, 256> first;   // qs[m]
  std::array<uint32_t, 256> second;  // qs[16 + m]
  std::array<uint32_t, 256> third;   // qs[32 + m]
};
constexpr Tq1Columns kTq1Columns = [] {
  Tq1Columns table{};
  for (uint32_t x = 0; x < 256; ++x) {
    const Tq1Trits& t = kTq1Trits[x];
    const uint32_t even = t[0] | t[2] << 2 | t[4] << 4;  // trits 0, 2, 4 at bits 0, 2, 4
    const uint32_t odd = t[1] | t[3] << 2;                // trits 1, 3 at bits 0, 2
    table.first[x] = even | odd << 16;
    table.second[x] = even << 8 | odd << 24;
    table.third[x] = t[2] << 6 | t[3] << 14 | (t[0] << 4 | t[4] << 6) << 16 | t[1] << 28;
  }
  return table;
}();

constexpr uint64_t kTq1BlockBytes = 54;
void PermuteTq1Block(const uint8_t* src, uint8_t* dst, float* scale) {
  const uint8_t* qs = src;
  const uint8_t* qh = src + 48;
  for (int m = 0; m < 16; ++m) {
    const uint32_t column = kTq1Columns.first[qs[m]] | kTq1Columns.second[qs[16 + m]] |
                            kTq1Columns.third[qs[32 + m]] | uint32_t{kTq1Trits[qh[m % 4]][m / 4]} << 30;
    dst[m] = static_cast<uint8_t>(column);
    dst[16 + m] = static_cast<uint8_t>(column >> 8);
    dst[32 + m] = static_cast<uint8_t>(column >> 16);
    dst[48 + m] = static_cast<uint8_t>(column >> 24);
  }
  *scale = HalfToFloat(LoadU16(src + 52));
}

// Ternary: runtime block b of a row from the GGUF block(s) holding its 256 elements, codes
// w + 1, by moving fields (PermuteTq2Block, PermuteI2sBlocks) or digits (PermuteTq1Block), each
// checked against the reference block decoder in tests/kernels/pack_weight_test.cc. Every code
// byte and scale is written, so the arrays start unfilled.
Status PackTernary(DType type, std::span<const uint8_t> bytes, uint64_t cols, uint64_t rows, ThreadPool* pool,
                   WeightView& view, AlignedArray<uint8_t>& data, AlignedArray<float>& scales) {
  float i2s_scale = 0.0f;
  if (type == DType::kI2_S) {
    BF_ASSIGN_OR_RETURN(i2s_scale, ref::ReadI2sScale(bytes));
  }
  const uint64_t blocks = CeilDiv(cols, kTernaryBlock);
  view.blocks = blocks;
  view.row_bytes = blocks * kTernaryBlockBytes;
  data = AllocateUnfilled<uint8_t>(rows * view.row_bytes);
  scales = AllocateUnfilled<float>(rows * blocks);
  const uint64_t row_bytes = view.row_bytes;
  const uint64_t i2s_blocks_per_row = cols / 128;  // I2_S blocks hold 128 elements
  ForRows(pool, rows, [&](int64_t begin, int64_t end) {
    for (uint64_t r = static_cast<uint64_t>(begin); r < static_cast<uint64_t>(end); ++r) {
      for (uint64_t b = 0; b < blocks; ++b) {
        uint8_t* dst = data.get() + r * row_bytes + b * kTernaryBlockBytes;
        float* scale = &scales[r * blocks + b];
        if (type == DType::kTQ2_0) {
          PermuteTq2Block(bytes.data() + (r * blocks + b) * kTq2BlockBytes, dst, scale);
        } else if (type == DType::kI2_S) {
          const uint8_t* src = bytes.data() + (r * i2s_blocks_per_row + 2 * b) * kI2sBlockBytes;
          PermuteI2sBlocks(src, 2 * b + 1 < i2s_blocks_per_row ? src + kI2sBlockBytes : nullptr, dst);
          *scale = i2s_scale;
        } else {  // TQ1_0: 256-element blocks, one per runtime block
          PermuteTq1Block(bytes.data() + (r * blocks + b) * kTq1BlockBytes, dst, scale);
        }
      }
    }
  });
  return absl::OkStatus();
}

// The per-row scale of WeightView::row_scales, or false when some row's nonzero blocks
// disagree. A block whose 64 code bytes are all 0x55 (four codes 1: weights 0) is ignored.
// I2_S rows always agree (one tensor scale); a row of zero weights takes scale 0.
bool UniformRowScales(const WeightView& view, const float* scales, float* row_scales) {
  for (uint64_t r = 0; r < view.rows; ++r) {
    const uint8_t* row = view.data + r * view.row_bytes;
    bool have = false;
    float scale = 0.0f;
    for (uint64_t b = 0; b < view.blocks; ++b) {
      const uint8_t* codes = row + b * kTernaryBlockBytes;
      bool zero_block = true;
      for (uint64_t i = 0; i < kTernaryBlockBytes && zero_block; ++i) zero_block = codes[i] == 0x55;
      if (zero_block) continue;
      const float d = scales[r * view.blocks + b];
      if (!have) {
        scale = d;
        have = true;
      } else if (std::memcmp(&d, &scale, sizeof(d)) != 0) {
        return false;
      }
    }
    row_scales[r] = scale;
  }
  return true;
}

// Q4_0 / Q4_1: nibbles regrouped into 128-element groups (moved as stored, not decoded); scales
// (and mins) kept as fp16 bits.
void PackQ4(DType type, std::span<const uint8_t> bytes, uint64_t cols, uint64_t rows, ThreadPool* pool,
            WeightView& view, AlignedArray<uint8_t>& data, AlignedArray<uint16_t>& half_d,
            AlignedArray<uint16_t>& half_m) {
  const bool q4_1 = type == DType::kQ4_1;
  const uint64_t src_blocks = cols / 32;
  const uint64_t groups = CeilDiv(cols, kQ4Group);
  view.blocks = groups * 4;
  view.row_bytes = groups * kQ4GroupBytes;
  data = AllocateAligned<uint8_t>(rows * view.row_bytes);
  half_d = AllocateAligned<uint16_t>(rows * view.blocks);
  if (q4_1) half_m = AllocateAligned<uint16_t>(rows * view.blocks);
  const uint32_t block_bytes = Info(type).block_bytes;
  const uint64_t row_bytes = view.row_bytes;
  const uint64_t row_blocks = view.blocks;
  const uint32_t codes_at = q4_1 ? 4 : 2;  // after d (and m)
  ForRows(pool, rows, [&](int64_t begin, int64_t end) {
    for (uint64_t r = static_cast<uint64_t>(begin); r < static_cast<uint64_t>(end); ++r) {
      uint8_t* row = data.get() + r * row_bytes;
      for (uint64_t b = 0; b < src_blocks; ++b) {
        // GGUF block b: byte i holds element 32b + i (low nibble) and 32b + 16 + i (high), the
        // stored nibble being exactly the runtime's (w + 8 for Q4_0, w for Q4_1). Within its
        // 128-group the block starts at element 32 (b % 4): bytes 32 (b % 2) .., nibble b % 4 / 2.
        const uint8_t* src = bytes.data() + (r * src_blocks + b) * block_bytes;
        const uint8_t* qs = src + codes_at;
        uint8_t* group = row + (b / 4) * kQ4GroupBytes + 32 * (b % 2);
        const int shift = (b % 4) >= 2 ? 4 : 0;
        for (int i = 0; i < 16; ++i) {
          group[i] |= static_cast<uint8_t>((qs[i] & 15) << shift);
          group[16 + i] |= static_cast<uint8_t>((qs[i] >> 4) << shift);
        }
        half_d[r * row_blocks + b] = LoadU16(src);
        if (q4_1) half_m[r * row_blocks + b] = LoadU16(src + 2);
      }
    }
  });
}

void PackQ8(std::span<const uint8_t> bytes, uint64_t cols, uint64_t rows, ThreadPool* pool, WeightView& view,
            AlignedArray<uint8_t>& data, AlignedArray<uint16_t>& half_d) {
  const uint64_t src_blocks = cols / 32;
  view.blocks = CeilDiv(src_blocks, 2) * 2;
  view.row_bytes = view.blocks * 32;
  data = AllocateUnfilled<uint8_t>(rows * view.row_bytes);
  half_d = AllocateUnfilled<uint16_t>(rows * view.blocks);
  const uint64_t row_bytes = view.row_bytes;
  const uint64_t row_blocks = view.blocks;
  ForRows(pool, rows, [&](int64_t begin, int64_t end) {
    for (uint64_t r = static_cast<uint64_t>(begin); r < static_cast<uint64_t>(end); ++r) {
      for (uint64_t b = 0; b < src_blocks; ++b) {
        const uint8_t* src = bytes.data() + (r * src_blocks + b) * 34;
        half_d[r * row_blocks + b] = LoadU16(src);
        std::memcpy(data.get() + r * row_bytes + b * 32, src + 2, 32);
      }
      if (row_blocks > src_blocks) {  // the padding block: codes 0, d 0
        std::memset(data.get() + r * row_bytes + src_blocks * 32, 0, 32);
        half_d[r * row_blocks + src_blocks] = 0;
      }
    }
  });
}

}  // namespace

const CpuPackedWeight* AsCpuPacked(const PackedWeight& w) { return dynamic_cast<const CpuPackedWeight*>(&w); }

}  // namespace cpu

StatusOr<std::unique_ptr<PackedWeight>> PackWeight(DType type, uint64_t cols, uint64_t rows,
                                                   std::span<const uint8_t> bytes, ThreadPool* pool) {
  using cpu::LayoutKind;
  if (cols == 0 || rows == 0 || cols > cpu::kMaxDim || rows > cpu::kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat("PackWeight: bad shape ", rows, "x", cols));
  }
  LayoutKind kind;
  switch (type) {
    case DType::kTQ1_0:
    case DType::kTQ2_0:
    case DType::kI2_S:
      kind = LayoutKind::kTernary;
      break;
    case DType::kQ4_0:
      kind = LayoutKind::kQ4_0;
      break;
    case DType::kQ4_1:
      kind = LayoutKind::kQ4_1;
      break;
    case DType::kQ8_0:
      kind = LayoutKind::kQ8_0;
      break;
    case DType::kF32:
      kind = LayoutKind::kF32;
      break;
    case DType::kF16:
      kind = LayoutKind::kF16;
      break;
    case DType::kBF16:
      kind = LayoutKind::kBF16;
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("PackWeight: no CPU kernel for type ", DTypeName(type)));
  }
  BF_ASSIGN_OR_RETURN(uint64_t expected, TensorBytes(type, cols, rows * cols));
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("PackWeight: ", DTypeName(type), " ", rows, "x", cols, " needs ",
                                                   expected, " bytes, got ", bytes.size()));
  }
  auto packed = std::unique_ptr<cpu::CpuPackedWeight>(new cpu::CpuPackedWeight());
  packed->type_ = type;
  packed->kind_ = kind;
  packed->stream_bytes_ = expected;
  cpu::WeightView& view = packed->view_;
  view.rows = rows;
  view.cols = cols;
  switch (kind) {
    case LayoutKind::kTernary:
      BF_RETURN_IF_ERROR(cpu::PackTernary(type, bytes, cols, rows, pool, view, packed->data_, packed->scales_));
      view.data = packed->data_.get();
      packed->row_scales_ = AllocateAligned<float>(rows);
      if (!cpu::UniformRowScales(view, packed->scales_.get(), packed->row_scales_.get())) packed->row_scales_.reset();
      break;
    case LayoutKind::kQ4_0:
    case LayoutKind::kQ4_1:
      cpu::PackQ4(type, bytes, cols, rows, pool, view, packed->data_, packed->half_d_, packed->half_m_);
      break;
    case LayoutKind::kQ8_0:
      cpu::PackQ8(bytes, cols, rows, pool, view, packed->data_, packed->half_d_);
      break;
    case LayoutKind::kF32:
    case LayoutKind::kF16:
    case LayoutKind::kBF16:
      view.blocks = 0;
      view.row_bytes = cols * Info(type).block_bytes;
      packed->data_ = AllocateUnfilled<uint8_t>(bytes.size());
      std::memcpy(packed->data_.get(), bytes.data(), bytes.size());
      break;
  }
  view.data = packed->data_.get();
  view.scales = packed->scales_.get();
  view.half_d = packed->half_d_.get();
  view.half_m = packed->half_m_.get();
  view.row_scales = packed->row_scales_.get();
  uint64_t resident = rows * view.row_bytes;
  if (view.row_scales) resident += rows * sizeof(float);
  if (view.scales) resident += rows * view.blocks * sizeof(float);
  if (view.half_d) resident += rows * view.blocks * sizeof(uint16_t);
  if (view.half_m) resident += rows * view.blocks * sizeof(uint16_t);
  packed->resident_bytes_ = resident;
  return std::unique_ptr<PackedWeight>(std::move(packed));
}

}  // namespace bitfleet::kernels

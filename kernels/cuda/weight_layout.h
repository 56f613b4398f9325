// The GPU runtime layout of quantized weight matrices, shared by the host packer
// (kernels/cuda/cuda_weight.cc), the CUDA kernels (kernels/cuda/*.cu) and the host emulation
// test (tests/gpu/cuda_layout_test.cc). Plain C++ plus CUDA qualifiers: no abseil, no device
// headers, so g++ and nvcc both compile it. docs/cuda.md draws the layout.
//
// A weight W (rows × cols) of a quantized type becomes int codes w with per-block scales,
// value = w * d (+ m for Q4_1), as kernels/ref/matmul_ref.h's IntBlock defines them.
//
// - Rows come in groups of kRowGroup = 8. Each row is cut into "steps" of 64 code bytes that
//   hold kStepElems(format) elements; the 8 rows' 64-byte pieces of one step are stored back to
//   back, so one warp reads one step of a row group as 512 contiguous bytes:
//     byte offset of (group g, step s, row r) = ((g * n_steps + s) * 8 + r) * 64.
//   Rows are padded to whole groups and columns to whole steps; padding has scale 0 (and codes
//   of value 0), and the activations are zero there anyway.
// - Inside a row's 64-byte step:
//   * ternary (256 elements, one scale block): TQ2_0's code order with code c = w + 1: byte m
//     (0..31) of half h (0..1) holds elements 128h + m + 32k at bits 2k (k = 0..3).
//   * Q4_0 / Q4_1 (128 elements = 4 blocks of 32): block j at bytes 16j..16j+15 in GGUF order:
//     byte i low nibble = element 32j + i, high nibble = element 32j + 16 + i. Nibble = w + 8
//     (Q4_0) or w (Q4_1).
//   * Q8_0 (64 elements = 2 blocks of 32): block j at bytes 32j..32j+31, byte i = w of element
//     32j + i.
//   With this order, 32-bit word t of a step, masked or shifted, gives four consecutive
//   elements as four bytes: exactly one dp4a operand or one int8 tensor-core fragment register.
// - Scales, one per (row, block): index (g * n_blocks + b) * 8 + r. Ternary: float (TQ block
//   scale, or I2_S's tensor scale, which is fp32). Q4/Q8: the GGUF fp16 d bits (and fp16 m for
//   Q4_1), so the packed stream is no larger than the file's.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define BF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define BF_HOST_DEVICE inline
#endif

namespace bitfleet::kernels::cuda {

enum class QuantFormat : int { kTernary = 0, kQ4_0 = 1, kQ4_1 = 2, kQ8_0 = 3 };

inline constexpr int kRowGroup = 8;        // rows interleaved per step
inline constexpr int kStepBytes = 64;      // code bytes of one row per step
inline constexpr int kGroupStepBytes = kRowGroup * kStepBytes;  // 512: one warp load

// Elements of one row per 64-byte step.
BF_HOST_DEVICE constexpr int StepElems(QuantFormat f) {
  return f == QuantFormat::kTernary ? 256 : (f == QuantFormat::kQ8_0 ? 64 : 128);
}
// Elements per scale block.
BF_HOST_DEVICE constexpr int BlockElems(QuantFormat f) { return f == QuantFormat::kTernary ? 256 : 32; }
// Scale blocks per step.
BF_HOST_DEVICE constexpr int BlocksPerStep(QuantFormat f) { return StepElems(f) / BlockElems(f); }

// Byte offset of row r (0..7) of group g at step s.
BF_HOST_DEVICE uint64_t CodeOffset(uint64_t g, uint64_t s, int r, uint64_t n_steps) {
  return ((g * n_steps + s) * kRowGroup + r) * kStepBytes;
}
// Index of the scale of row r of group g in block b.
BF_HOST_DEVICE uint64_t ScaleIndex(uint64_t g, uint64_t b, int r, uint64_t n_blocks) {
  return (g * n_blocks + b) * kRowGroup + r;
}

// Where element e (0 <= e < StepElems) of a row's step lives: byte (0..63) and bit shift.
struct CodePlace {
  int byte;
  int shift;
};
BF_HOST_DEVICE CodePlace PlaceInStep(QuantFormat f, int e) {
  switch (f) {
    case QuantFormat::kTernary:  // byte 32h + m, bits 2k, for e = 128h + 32k + m
      return {32 * (e / 128) + e % 32, 2 * ((e % 128) / 32)};
    case QuantFormat::kQ8_0:
      return {e, 0};
    default: {  // Q4: block j = e / 32, i = e % 32: byte 16j + i % 16, high nibble when i >= 16
      const int j = e / 32;
      const int i = e % 32;
      return {16 * j + i % 16, i >= 16 ? 4 : 0};
    }
  }
}

// The stored code of integer value w (the inverse of DecodeCode).
BF_HOST_DEVICE uint32_t EncodeCode(QuantFormat f, int w) {
  switch (f) {
    case QuantFormat::kTernary:
      return static_cast<uint32_t>(w + 1) & 3u;
    case QuantFormat::kQ4_0:
      return static_cast<uint32_t>(w + 8) & 15u;
    case QuantFormat::kQ4_1:
      return static_cast<uint32_t>(w) & 15u;
    default:
      return static_cast<uint32_t>(w) & 255u;
  }
}

// ---- four codes at once: one 32-bit word of a step -> four signed bytes -------------------
// Bytewise subtraction without borrows between bytes (each byte's minuend is >= 0 and small).
BF_HOST_DEVICE uint32_t SubBytes(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __vsub4(a, b);
#else
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= ((((a >> (8 * i)) & 255u) - ((b >> (8 * i)) & 255u)) & 255u) << (8 * i);
  return r;
#endif
}

// Ternary: the four 2-bit codes at bits `shift` of each byte of `word`, as signed bytes w = c - 1.
BF_HOST_DEVICE uint32_t TernaryQuad(uint32_t word, int shift) {
  return SubBytes((word >> shift) & 0x03030303u, 0x01010101u);
}
// Q4_0: low (shift 0) or high (shift 4) nibbles as signed bytes w = nibble - 8.
BF_HOST_DEVICE uint32_t Q4_0Quad(uint32_t word, int shift) {
  return SubBytes((word >> shift) & 0x0F0F0F0Fu, 0x08080808u);
}
// Q4_1: nibbles as bytes 0..15 (w = nibble; the offset m is applied with the activation sums).
BF_HOST_DEVICE uint32_t Q4_1Quad(uint32_t word, int shift) { return (word >> shift) & 0x0F0F0F0Fu; }

// sum_i int8(a_i) * int8(b_i) + c over the four bytes of a and b (CUDA's __dp4a on a device).
BF_HOST_DEVICE int Dp4a(uint32_t a, uint32_t b, int c) {
#if defined(__CUDA_ARCH__)
  return __dp4a(static_cast<int>(a), static_cast<int>(b), c);
#else
  for (int i = 0; i < 4; ++i) {
    c += static_cast<int>(static_cast<int8_t>(a >> (8 * i))) * static_cast<int>(static_cast<int8_t>(b >> (8 * i)));
  }
  return c;
#endif
}

// sum_i uint8(a_i) * int8(b_i) + c: unsigned codes against signed activations (dp4a.u32.s32).
BF_HOST_DEVICE int Dp4aUnsignedSigned(uint32_t a, uint32_t b, int c) {
#if defined(__CUDA_ARCH__)
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#else
  for (int i = 0; i < 4; ++i) {
    c += static_cast<int>((a >> (8 * i)) & 255u) * static_cast<int>(static_cast<int8_t>(b >> (8 * i)));
  }
  return c;
#endif
}

// ---- what one lane of the mat-vec kernel reads (warp = one row group, one step) ------------
// Lane l reads the 16 bytes at 16 * (l % 4) of row l / 4's step. For its 4 words t = 0..3 the
// activation bytes that pair with the decoded quads are given below (offsets from the step's
// first element). `part` is the quad index: ternary 0..3 (shift 2 * part), Q4 0..1 (low/high
// nibbles), Q8 0 (the word itself).
BF_HOST_DEVICE int LaneActOffset(QuantFormat f, int quarter, int word, int part) {
  switch (f) {
    case QuantFormat::kTernary:  // half h = quarter / 2, bytes m = 16 * (quarter % 2) + 4t
      return 128 * (quarter / 2) + 16 * (quarter % 2) + 32 * part + 4 * word;
    case QuantFormat::kQ8_0:
      return 16 * quarter + 4 * word;
    default:  // Q4: block j = quarter
      return 32 * quarter + 16 * part + 4 * word;
  }
}
// Scale block of a lane's 16 bytes within the step.
BF_HOST_DEVICE int LaneBlock(QuantFormat f, int quarter) {
  switch (f) {
    case QuantFormat::kTernary:
      return 0;
    case QuantFormat::kQ8_0:
      return quarter / 2;
    default:
      return quarter;
  }
}

// 16 activation bytes (16-byte aligned) as four words: the read-only cached path on a device.
BF_HOST_DEVICE void LoadActivation16(const int8_t* p, uint32_t (&out)[4]) {
#if defined(__CUDA_ARCH__)
  const int4 a = __ldg(reinterpret_cast<const int4*>(p));
  out[0] = static_cast<uint32_t>(a.x);
  out[1] = static_cast<uint32_t>(a.y);
  out[2] = static_cast<uint32_t>(a.z);
  out[3] = static_cast<uint32_t>(a.w);
#else
  std::memcpy(out, p, 16);
#endif
}

// Where a mat-vec lane's reads start within a step: its first activation byte
// (LaneActOffset's part 0, word 0) and its first per-32 block sum. The rest of what LaneDotAt
// reads lies at fixed offsets from these, so a kernel can hold them as per-lane pointers.
BF_HOST_DEVICE int LaneActBase(QuantFormat f, int quarter) { return LaneActOffset(f, quarter, 0, 0); }
BF_HOST_DEVICE int LaneSumsBase(QuantFormat f, int quarter) {
  return f == QuantFormat::kTernary ? 2 * quarter : (f == QuantFormat::kQ8_0 ? 0 : quarter);
}

// The mat-vec lane's integer contribution for one step and one token: its 16 code bytes
// (`words`, 4 words) against the matching activation bytes (`lane_x`: the step's first
// activation byte + LaneActBase; `lane_sums`: the step's first per-32 block sum + LaneSumsBase).
//
// The codes are used as unsigned bytes in place, with no per-byte decoding (dp4a.u32.s32 on
// masked words; a field at bit 2k or 4k weighs 4^k or 16^k, divided out exactly once per step),
// and the code offset is removed through the activation sums: sum w x = sum c x - offset sum x.
// - Q4_0 (c = w + 8): the lane holds exactly its 32-block (LaneBlock), so it subtracts
//   8 * that block's sum: the result is the lane's own dot product.
// - Ternary (c = w + 1): one scale per step is shared by the row's 4 lanes, so lane `quarter`
//   subtracts the sums of the step's blocks 2q and 2q + 1: only the sum over a row's 4 lanes is
//   the row's dot product (each lane's own value is not, and can be far larger: callers add the
//   4 lanes' values as integers before scaling).
// - Q4_1 (c = w; the caller adds m * block sum) and Q8_0 (c = w, signed): the plain dot product.
// Every offset below is a constant (LaneActOffset(f, q, t, k) - LaneActBase(f, q)).
template <QuantFormat F>
BF_HOST_DEVICE int LaneDotAt(const uint32_t (&words)[4], const int8_t* lane_x, const int32_t* lane_sums) {
  uint32_t a[4];
  if constexpr (F == QuantFormat::kTernary) {
    int part[4] = {0, 0, 0, 0};
    for (int k = 0; k < 4; ++k) {
      LoadActivation16(lane_x + 32 * k, a);
      const uint32_t mask = 0x03030303u << (2 * k);
      for (int t = 0; t < 4; ++t) part[k] = Dp4aUnsignedSigned(words[t] & mask, a[t], part[k]);
    }
    const int codes = part[0] + (part[1] >> 2) + (part[2] >> 4) + (part[3] >> 6);
    return codes - lane_sums[0] - lane_sums[1];
  } else if constexpr (F == QuantFormat::kQ8_0) {
    int dot = 0;
    LoadActivation16(lane_x, a);
    for (int t = 0; t < 4; ++t) dot = Dp4a(words[t], a[t], dot);
    return dot;
  } else {
    int lo = 0;
    int hi = 0;
    LoadActivation16(lane_x, a);
    for (int t = 0; t < 4; ++t) lo = Dp4aUnsignedSigned(words[t] & 0x0F0F0F0Fu, a[t], lo);
    LoadActivation16(lane_x + 16, a);
    for (int t = 0; t < 4; ++t) hi = Dp4aUnsignedSigned(words[t] & 0xF0F0F0F0u, a[t], hi);
    const int codes = lo + (hi >> 4);
    if constexpr (F == QuantFormat::kQ4_0) return codes - 8 * lane_sums[0];
    return codes;
  }
}

// LaneDotAt from the step's first activation byte `xs` and first block sum `step_sums`.
template <QuantFormat F>
BF_HOST_DEVICE int LaneDot(const uint32_t (&words)[4], int quarter, const int8_t* xs, const int32_t* step_sums) {
  return LaneDotAt<F>(words, xs + LaneActBase(F, quarter), step_sums + LaneSumsBase(F, quarter));
}

// ---- what one thread of the tensor-core kernel reads (mma.sync m16n8k32, s8) -----------------
// Thread (gid = lane / 4, tid = lane % 4) loads words 4i + tid (i = 0..3) of a row's step for
// rows gid and gid + 8 of the tile. MmaFragmentA gives, for k-step ks of the step (elements
// 32 ks .. 32 ks + 31), the A register for k = 4 tid .. +3 (`lo`) and for k = 16 + 4 tid .. +3
// (`hi`) of that row, as signed bytes (Q4_1: unsigned nibbles).
BF_HOST_DEVICE constexpr int MmaKSteps(QuantFormat f) { return StepElems(f) / 32; }

template <QuantFormat F>
BF_HOST_DEVICE void MmaFragmentA(const uint32_t (&words)[4], int ks, uint32_t* lo, uint32_t* hi) {
  if constexpr (F == QuantFormat::kTernary) {  // ks = 4h + j: words 2h and 2h + 1, bits 2j
    *lo = TernaryQuad(words[2 * (ks / 4)], 2 * (ks % 4));
    *hi = TernaryQuad(words[2 * (ks / 4) + 1], 2 * (ks % 4));
  } else if constexpr (F == QuantFormat::kQ8_0) {  // block ks: words 2 ks and 2 ks + 1
    *lo = words[2 * ks];
    *hi = words[2 * ks + 1];
  } else if constexpr (F == QuantFormat::kQ4_0) {  // block ks: word ks, low / high nibbles
    *lo = Q4_0Quad(words[ks], 0);
    *hi = Q4_0Quad(words[ks], 4);
  } else {
    *lo = Q4_1Quad(words[ks], 0);
    *hi = Q4_1Quad(words[ks], 4);
  }
}

}  // namespace bitfleet::kernels::cuda

// Per-block reference codecs and byte offsets of the block-quantized weight types. These are the
// ground truth that SIMD and CUDA variants (and their repacking at load time) are tested against;
// kernels/ref/quant.h wraps them with size checks. docs/formats.md explains each layout.
//
// All multi-byte fields are little-endian (as in GGUF files on every platform bitfleet runs on).
// Inputs are assumed finite; the public API checks that before calling these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace bitfleet::kernels::ref {

// ---- Q8_0 (ggml block_q8_0): {fp16 d; int8 qs[32]} ----------------------------------------
inline constexpr size_t kQ8_0BlockElems = 32;
inline constexpr size_t kQ8_0BlockBytes = 34;
inline constexpr size_t kQ8_0ScaleOffset = 0;  // fp16 d = max|x| / 127
inline constexpr size_t kQ8_0QuantsOffset = 2;  // qs[j] = round_half_away(x[j] / d), value = qs[j] * d

void QuantizeBlockQ8_0(std::span<const float, kQ8_0BlockElems> x, std::span<uint8_t, kQ8_0BlockBytes> block);
void DequantizeBlockQ8_0(std::span<const uint8_t, kQ8_0BlockBytes> block, std::span<float, kQ8_0BlockElems> y);

// ---- Q4_0 (ggml block_q4_0): {fp16 d; uint8 qs[16]} ---------------------------------------
// qs[j] low nibble = element j, high nibble = element j + 16; value = (nibble - 8) * d.
inline constexpr size_t kQ4_0BlockElems = 32;
inline constexpr size_t kQ4_0BlockBytes = 18;
inline constexpr size_t kQ4_0ScaleOffset = 0;  // fp16 d = (signed value of max |x|) / -8
inline constexpr size_t kQ4_0QuantsOffset = 2;

void QuantizeBlockQ4_0(std::span<const float, kQ4_0BlockElems> x, std::span<uint8_t, kQ4_0BlockBytes> block);
void DequantizeBlockQ4_0(std::span<const uint8_t, kQ4_0BlockBytes> block, std::span<float, kQ4_0BlockElems> y);

// ---- Q4_1 (ggml block_q4_1): {fp16 d; fp16 m; uint8 qs[16]} -------------------------------
// Nibble order as Q4_0; value = nibble * d + m with d = (max - min) / 15, m = min.
inline constexpr size_t kQ4_1BlockElems = 32;
inline constexpr size_t kQ4_1BlockBytes = 20;
inline constexpr size_t kQ4_1ScaleOffset = 0;
inline constexpr size_t kQ4_1MinOffset = 2;
inline constexpr size_t kQ4_1QuantsOffset = 4;

void QuantizeBlockQ4_1(std::span<const float, kQ4_1BlockElems> x, std::span<uint8_t, kQ4_1BlockBytes> block);
void DequantizeBlockQ4_1(std::span<const uint8_t, kQ4_1BlockBytes> block, std::span<float, kQ4_1BlockElems> y);

// ---- TQ2_0 (ggml block_tq2_0): {uint8 qs[64]; fp16 d} -------------------------------------
// Element e (0..255) is the 2-bit code (t + 1) at bits 2*((e % 128) / 32) of byte
// (e / 128) * 32 + e % 32; value = (code - 1) * d, d = max|x| over the block.
inline constexpr size_t kTq2_0BlockElems = 256;
inline constexpr size_t kTq2_0BlockBytes = 66;
inline constexpr size_t kTq2_0QuantsOffset = 0;
inline constexpr size_t kTq2_0ScaleOffset = 64;

void QuantizeBlockTq2_0(std::span<const float, kTq2_0BlockElems> x, std::span<uint8_t, kTq2_0BlockBytes> block);
void DequantizeBlockTq2_0(std::span<const uint8_t, kTq2_0BlockBytes> block, std::span<float, kTq2_0BlockElems> y);

// ---- TQ1_0 (ggml block_tq1_0): {uint8 qs[48]; uint8 qh[4]; fp16 d} ------------------------
// Base-3 packing, 5 trits per byte (4 in qh), most significant trit first, stored as
// ceil(q * 256 / 243) so trit n is recovered as ((uint8)(byte * 3^n) * 3) >> 8:
//   qs[m],      m < 32: elements m + 32n,        n = 0..4   (elements 0..159)
//   qs[32 + m], m < 16: elements 160 + m + 16n,  n = 0..4   (elements 160..239)
//   qh[m],      m < 4:  elements 240 + m + 4n,   n = 0..3   (elements 240..255; 5th trit 0)
inline constexpr size_t kTq1_0BlockElems = 256;
inline constexpr size_t kTq1_0BlockBytes = 54;
inline constexpr size_t kTq1_0QsOffset = 0;
inline constexpr size_t kTq1_0QhOffset = 48;
inline constexpr size_t kTq1_0ScaleOffset = 52;

void QuantizeBlockTq1_0(std::span<const float, kTq1_0BlockElems> x, std::span<uint8_t, kTq1_0BlockBytes> block);
void DequantizeBlockTq1_0(std::span<const uint8_t, kTq1_0BlockBytes> block, std::span<float, kTq1_0BlockElems> y);

// ---- I2_S (bitnet.cpp, x86 layout): 128 elements in 32 bytes, per-tensor fp32 scale --------
// Byte j holds elements j, j+32, j+64, j+96 at bit shifts 6, 4, 2, 0. Codes 0/1/2 mean -1/0/+1
// (3 decodes as 0). The scale (max|w| over the whole tensor) sits in the first 4 bytes of a
// 32-byte tail after the last block; the other 28 tail bytes are padding (written as zero).
inline constexpr size_t kI2sBlockElems = 128;
inline constexpr size_t kI2sBlockBytes = 32;
inline constexpr size_t kI2sTailBytes = 32;

// Encodes one block by sign, exactly as bitnet.cpp does: |x| < 1e-6 -> code 1, else x > 0 -> 2,
// x < 0 -> 0. The magnitude is not rounded against the scale: I2_S expects already-ternary input
// (see QuantizeTernaryAbsmean).
void QuantizeBlockI2s(std::span<const float, kI2sBlockElems> x, std::span<uint8_t, kI2sBlockBytes> block);
void DequantizeBlockI2s(std::span<const uint8_t, kI2sBlockBytes> block, float scale,
                        std::span<float, kI2sBlockElems> y);

}  // namespace bitfleet::kernels::ref

// Scalar reference quantizers and dequantizers for every weight type bitfleet reads or writes.
//
// Byte layouts and arithmetic follow llama.cpp's ggml (F32, F16, BF16, Q8_0, Q4_0, Q4_1, TQ1_0,
// TQ2_0: quantize_row_*_ref / dequantize_row_*) and bitnet.cpp (I2_S: quantize_i2_s, x86
// activation-parallel layout / dequantize_row_i2_s), so bytes written here equal the bytes those
// tools write for the same input, and files move freely between them. docs/formats.md documents
// every layout; kernels/ref/quant_blocks.h has the per-block codecs and offsets.
//
// Contracts:
// - A tensor is a whole number of rows of `row_elems` elements, and `row_elems` is a multiple of
//   the type's block (DTypeInfo::block_elems). Tensor bytes are the rows back to back plus the
//   type's per-tensor tail (I2_S: 32 bytes holding the fp32 scale); core/dtype.h TensorBytes.
// - Sizes are validated, never assumed: a mismatch returns InvalidArgument naming the expected
//   size. Types without a reference codec (I8, I16, I32, F64) return Unimplemented.
// - Block-quantized types reject NaN/Inf inputs (InvalidArgument) because ggml's arithmetic on
//   them is undefined; F32/F16/BF16 convert them like ggml does.
// - Pure functions of their inputs; safe to call from many threads on disjoint outputs.
#pragma once

#include <cstdint>
#include <span>

#include "core/dtype.h"
#include "core/status.h"

namespace bitfleet::kernels::ref {

// True for the types with a reference codec here (F32, F16, BF16, Q8_0, Q4_0, Q4_1, TQ1_0,
// TQ2_0, I2_S); the others make every function below return Unimplemented.
bool HasReferenceCodec(DType type);

// Encodes `src` (a tensor of rows of `row_elems`) into `dst`, which must be exactly
// TensorBytes(type, row_elems, src.size()) bytes.
Status QuantizeTensor(DType type, std::span<const float> src, uint64_t row_elems, std::span<uint8_t> dst);

// Decodes `src` (exactly TensorBytes(type, row_elems, dst.size()) bytes) into `dst`.
Status DequantizeTensor(DType type, std::span<const uint8_t> src, uint64_t row_elems, std::span<float> dst);

// One row (or any whole number of blocks) of a type without a per-tensor tail: dst must be
// RowBytes(type, src.size()) bytes. I2_S is rejected (its scale is per tensor: use the tensor
// functions, or DequantizeI2sCodes with the scale from ReadI2sScale).
Status QuantizeRow(DType type, std::span<const float> src, std::span<uint8_t> dst);
Status DequantizeRow(DType type, std::span<const uint8_t> src, std::span<float> dst);

// The fp32 scale stored in an I2_S tensor's 32-byte tail. `tensor` is the whole tensor encoding
// (codes followed by the tail), so its size must be a multiple of 32 and at least 32.
StatusOr<float> ReadI2sScale(std::span<const uint8_t> tensor);

// Decodes I2_S code blocks without the tail (for example, one tensor-parallel shard's rows):
// `codes` must be dst.size() / 4 bytes and dst.size() a multiple of 128.
// Value = scale * {-1, 0, +1, 0}[code].
Status DequantizeI2sCodes(std::span<const uint8_t> codes, float scale, std::span<float> dst);

struct TernaryAbsmeanOptions {
  // Round the scale to the nearest fp16 value, so TQ1_0/TQ2_0 (fp16 block scale) hold the result
  // exactly and all three ternary types dequantize it to identical floats.
  bool fp16_scale = true;
  // Lower bound on the scale (BitNet clamps mean|w| at 1e-5 so an all-zero tensor has a scale).
  float min_scale = 1e-5f;
};

// BitNet b1.58's absmean ternarization, for models not trained ternary (or to re-ternarize):
//   scale = max(mean|w| over the whole tensor, min_scale)   (optionally rounded to fp16)
//   dst[i] = clamp(round_half_even(src[i] / scale), -1, 1) * scale
// Returns the scale. dst.size() must equal src.size(); dst may be src (in place). The mean is
// accumulated in double. Errors on non-finite input, or a scale beyond the fp16 range when
// fp16_scale is set.
StatusOr<float> QuantizeTernaryAbsmean(std::span<const float> src, std::span<float> dst,
                                       const TernaryAbsmeanOptions& options = {});

}  // namespace bitfleet::kernels::ref

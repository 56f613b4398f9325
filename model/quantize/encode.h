// Encodes one tensor, given as float rows from any source (a random generator, a dequantized
// input tensor), into a weight type with the reference quantizers (kernels/ref/quant.h).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>

#include "core/dtype.h"
#include "core/status.h"

namespace bitfleet::quantize {

// Writes rows [first_row, first_row + out.size() / row_elems) of a tensor into `out` as floats.
// `out.size()` is always a whole number of rows. Called concurrently from several threads on
// disjoint row ranges, so it must be thread-safe.
using RowSource = std::function<Status(uint64_t first_row, std::span<float> out)>;

struct EncodeResult {
  // The input was not ternary with one scale, so absmean ternarization (BitNet b1.58's
  // weight quantizer) was applied first: lossy, and ruinous for a model not trained ternary.
  bool absmean_ternarized = false;
  // Ternary targets: the scale s of the encoded values {-s, 0, +s}.
  float ternary_scale = 0.0f;
};

// Elements converted per step for block-local types; bounds memory on multi-GB embeddings.
inline constexpr uint64_t kEncodeChunkElems = uint64_t{1} << 22;

// Encodes a tensor of `rows` rows of `row_elems` elements as `type` into `out`, which must be
// exactly TensorBytes(type, row_elems, rows * row_elems) bytes.
//
// Ternary types (TQ1_0, TQ2_0, I2_S) read the whole tensor: when every value is in {-s, 0, +s}
// for a single s (SingleTernaryScale) the values are encoded as they are, which is exact for
// I2_S and for TQ1_0/TQ2_0 whenever s is an fp16 value; otherwise the tensor is ternarized with
// absmean (fp16 scale) first and `result->absmean_ternarized` is set. Other types are converted
// in chunks of about kEncodeChunkElems elements. Chunks run on a process-wide pool of hardware
// threads; the bytes do not depend on the thread count (every block is encoded on its own).
Status EncodeTensor(DType type, uint64_t row_elems, uint64_t rows, const RowSource& source, std::span<uint8_t> out,
                    EncodeResult* result);

// Returns s > 0 when every value is -s, 0 or +s (either zero counts as 0), 0 when all are zero,
// and nullopt otherwise (including any non-finite value).
std::optional<float> SingleTernaryScale(std::span<const float> values);

}  // namespace bitfleet::quantize

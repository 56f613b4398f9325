// Loading weights from a mapped GGUF file into kernel layouts (DESIGN.md §5): matrices are
// repacked with kernels::PackWeight, vectors (norms) are decoded to float, and the token
// embedding stays in the file encoding and is decoded row by row on lookup.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/matmul.h"
#include "model/gguf/gguf.h"

namespace bitfleet::worker {

// A weight matrix and its optional per-tensor output scale ("blk.N.attn_q.scale" next to
// "blk.N.attn_q.weight", as BitNet conversions write it): y = scale * (W x).
struct Projection {
  std::unique_ptr<kernels::PackedWeight> weight;
  float scale = 1.0f;
  bool has_scale = false;

  bool quantized() const { return weight && IsQuantized(weight->type()); }
  uint64_t rows() const { return weight->rows(); }
  uint64_t cols() const { return weight->cols(); }
};

// Loads matrix `name` of GGUF shape [cols, rows] and its ".scale" sibling when present.
// INVALID_ARGUMENT (naming the tensor) when it is absent, has another shape, or the scale is
// not one finite float.
StatusOr<Projection> LoadProjection(const gguf::GgufFile& file, const std::string& name, uint64_t cols,
                                    uint64_t rows);

// Decodes a one-dimensional tensor of `n` elements (any type with a reference decoder).
StatusOr<std::vector<float>> LoadVector(const gguf::GgufFile& file, const std::string& name, uint64_t n);

// The token embedding table, read in place from the file mapping.
class TokenEmbedding {
 public:
  // `name` has GGUF shape [n_embd, n_vocab].
  static StatusOr<TokenEmbedding> Load(const gguf::GgufFile& file, const std::string& name, uint64_t n_embd,
                                       uint64_t n_vocab);
  // Writes the n_embd floats of `token` (already validated to be < n_vocab) to `out`.
  Status Lookup(int32_t token, float* out) const;
  // Bytes of one row in the file encoding.
  uint64_t row_bytes() const { return row_bytes_; }
  DType type() const { return type_; }

 private:
  std::span<const uint8_t> data_;
  DType type_ = DType::kF32;
  uint64_t n_embd_ = 0;
  uint64_t row_bytes_ = 0;
  float i2s_scale_ = 0.0f;  // I2_S only: the per-tensor scale
};

}  // namespace bitfleet::worker

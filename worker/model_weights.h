// Loading weights from a mapped GGUF file into kernel layouts (DESIGN.md §5): matrices are
// repacked with kernels::PackWeight, vectors (norms) are decoded to float, and the token
// embedding stays in the file encoding and is decoded row by row on lookup.
//
// Tensor parallelism (DESIGN.md §4): every loader takes the rank's sharding::TensorSlice from
// the shard plan and reads only those bytes of the mapping. A slice that is the whole tensor is
// packed straight from the mapping; any other slice is gathered (rows, then a block-aligned
// column range of each row) into a temporary buffer of the slice's size and packed from there,
// so a rank never touches, copies or keeps the other ranks' parts. An I2_S slice carries the
// tensor's per-tensor scale: its codes are followed by a copy of the tensor's 32-byte tail.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/matmul.h"
#include "model/gguf/gguf.h"
#include "sharding/shard_plan.h"

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

// Loads the rank's slice of a matrix and the tensor's ".scale" sibling when present (a scale is
// one number for the whole tensor, so every slice multiplies by it). INVALID_ARGUMENT (naming
// the tensor) when the tensor is absent, does not match the slice, or the scale is not one
// finite float. `pool`, when given, repacks the rows on its threads (kernels::PackWeight).
StatusOr<Projection> LoadProjection(const gguf::GgufFile& file, const sharding::TensorSlice& slice,
                                    ThreadPool* pool = nullptr);

// The ".scale" sibling of matrix `weight_name` ("blk.N.attn_q.weight" -> "blk.N.attn_q.scale"):
// empty when the file has none; INVALID_ARGUMENT when it is not one finite float.
StatusOr<std::optional<float>> ProjectionScale(const gguf::GgufFile& file, const std::string& weight_name);

// Loads the whole matrix `name` of GGUF shape [cols, rows] (a single-rank load); same errors.
StatusOr<Projection> LoadProjection(const gguf::GgufFile& file, const std::string& name, uint64_t cols,
                                    uint64_t rows);

// Decodes a one-dimensional tensor of `n` elements (any type with a reference decoder).
StatusOr<std::vector<float>> LoadVector(const gguf::GgufFile& file, const std::string& name, uint64_t n);
// Decodes the slice's element range of a one-dimensional tensor.
StatusOr<std::vector<float>> LoadVector(const gguf::GgufFile& file, const sharding::TensorSlice& slice);

// The bytes of `slice` in the file encoding: the mapping itself for a whole tensor, else a
// copy gathered into `*storage`. INVALID_ARGUMENT when a column range is not block-aligned.
StatusOr<std::span<const uint8_t>> SliceBytes(const gguf::GgufFile& file, const sharding::TensorSlice& slice,
                                              std::vector<uint8_t>* storage);

// The rows [vocab.begin, vocab.end) of the token embedding table, read in place from the file
// mapping (the rest of the table is never touched).
class TokenEmbedding {
 public:
  // `slice` is a vocab-parallel slice of a tensor of GGUF shape [n_embd, n_vocab].
  static StatusOr<TokenEmbedding> Load(const gguf::GgufFile& file, const sharding::TensorSlice& slice);
  // Writes the n_embd floats of `token` (already validated to be < n_vocab) to `out`; zeros when
  // the token's row belongs to another rank (the ranks' rows are then summed by an all-reduce).
  Status Lookup(int32_t token, float* out) const;
  bool Holds(int32_t token) const { return token >= vocab_begin_ && token < vocab_end_; }
  // Bytes of one row in the file encoding.
  uint64_t row_bytes() const { return row_bytes_; }
  // Bytes of this rank's rows in the mapping.
  uint64_t mapped_bytes() const { return data_.size(); }
  DType type() const { return type_; }

 private:
  std::span<const uint8_t> data_;  // rows [vocab_begin_, vocab_end_)
  DType type_ = DType::kF32;
  uint64_t n_embd_ = 0;
  uint64_t row_bytes_ = 0;
  int64_t vocab_begin_ = 0;
  int64_t vocab_end_ = 0;
  float i2s_scale_ = 0.0f;  // I2_S only: the per-tensor scale
};

}  // namespace bitfleet::worker

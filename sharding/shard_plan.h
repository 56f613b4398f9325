// Which slice of every tensor each rank of a tensor-parallel group holds (DESIGN.md §4).
//
// Megatron-style split, computed from the model config, the tensor types in the file and the
// TP degree:
// - column-parallel (split the output rows): attn_q (by query head), attn_k / attn_v (by KV
//   head), ffn_gate / ffn_up (by FFN unit);
// - row-parallel (split the input columns, the "K-split"; outputs are all-reduced): attn_output
//   (by query head), ffn_down (by FFN unit);
// - vocab-parallel (split the vocabulary rows): token_embd and output (the LM head);
// - sliced vectors: attn_sub_norm follows the query heads, ffn_sub_norm the FFN units;
// - replicated: the other norms and the per-projection ".scale" tensors.
//
// KV heads split evenly when n_head_kv % tp == 0. Otherwise every rank holds the KV heads its
// query heads read (replicated across the ranks that share them): one local slot per distinct
// KV head when its query heads map onto them uniformly (local head i reads slot
// i / (heads / slots), as the attention kernel's GQA rule needs), else one slot per local query
// head (each a copy of the KV head that query head reads).
//
// Block-quantized types fix where a K-split may fall: on multiples of the type's block
// (Q4_0/Q8_0: 32, I2_S: 128, TQ1_0/TQ2_0: 256; float types: anywhere). FFN units are whole
// blocks of every layer's ffn_down, balanced across ranks (they may differ by one block); query
// heads must divide evenly, and each rank's attn_output columns must be whole blocks. A plan
// that cannot be honoured is refused with INVALID_ARGUMENT naming the tensor and the reason.
//
// The plan is plain data (no kernels): the worker loads each rank's slices from it, and
// `bitfleet inspect --tp N` reports it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"

namespace bitfleet::sharding {

// A half-open index range [begin, end).
struct Range {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t size() const { return end - begin; }
  bool contains(uint64_t i) const { return i >= begin && i < end; }
  bool operator==(const Range&) const = default;
};

enum class TensorRole {
  kReplicated,      // every rank holds all of it
  kColumnParallel,  // output rows split
  kRowParallel,     // input columns split (outputs are all-reduced)
  kVocabParallel,   // vocabulary rows split (embedding, LM head)
  kSlicedVector,    // 1-D tensor sliced like the dimension it normalizes (BitNet sub-norms)
};
const char* TensorRoleName(TensorRole role);

// One rank's slice of one tensor. Shapes use the worker's convention: a matrix has `rows`
// output features of `cols` inputs (GGUF shape [cols, rows]); a vector has rows == 1.
struct TensorSlice {
  std::string name;
  DType type = DType::kF32;
  TensorRole role = TensorRole::kReplicated;
  uint64_t cols = 0;  // full tensor
  uint64_t rows = 0;
  // Rows held, in local order (their concatenation is the local matrix). Usually one range;
  // KV slots that are not a contiguous run of heads give several, possibly repeated.
  std::vector<Range> row_ranges;
  Range col_range;  // columns held (elements, for a vector)

  uint64_t local_rows() const;
  uint64_t local_cols() const { return col_range.size(); }
  bool whole() const { return local_cols() == cols && row_ranges.size() == 1 && row_ranges[0] == Range{0, rows}; }
  // Bytes of the slice in the file's encoding (I2_S: codes plus the 32-byte scale tail).
  uint64_t file_bytes() const;
};

// What one rank holds.
struct RankShard {
  int rank = 0;
  int size = 1;
  Range heads;                    // query heads
  std::vector<uint32_t> kv_heads;  // the model KV head held in each local KV slot
  bool kv_split = true;           // false: KV heads are replicated (n_head_kv % size != 0)
  Range ffn;                      // FFN hidden units
  Range vocab;                    // vocabulary rows of the embedding and LM head
  std::vector<TensorSlice> tensors;  // every tensor the forward pass reads, in model order

  // nullptr when the model has no tensor of that name.
  const TensorSlice* Find(std::string_view name) const;
  // File-encoding bytes of the split tensors' slices (column/row/vocab-parallel and sliced
  // vectors) and of the whole tensors every rank holds.
  uint64_t split_bytes() const;
  uint64_t replicated_bytes() const;
};

class ShardPlan {
 public:
  // Plans `tp_size` ranks (1 gives one rank holding everything). `config` must come from
  // `file` (ReadModelConfig) and the tensors must have been validated (ValidateTensors).
  static StatusOr<ShardPlan> Create(const model::ModelConfig& config, const gguf::GgufFile& file, int tp_size);

  int size() const { return static_cast<int>(ranks_.size()); }
  const RankShard& rank(int r) const { return ranks_[r]; }
  // Widest vocabulary slice of any rank (the per-rank row width of a gathered logit row).
  uint64_t max_vocab_slice() const;
  // Granularity the FFN split used (elements): the lcm of every ffn_down block size.
  uint64_t ffn_granule() const { return ffn_granule_; }

 private:
  std::vector<RankShard> ranks_;
  uint64_t ffn_granule_ = 1;
};

// Rank r's part of [0, n) cut into `parts` balanced contiguous ranges of whole `granule`s
// (n must be a multiple of granule): range r covers granules [r*u/parts, (r+1)*u/parts).
Range BalancedRange(uint64_t n, uint64_t granule, int parts, int r);

}  // namespace bitfleet::sharding

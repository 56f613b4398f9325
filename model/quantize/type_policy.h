// Which type each tensor of a model gets when synth writes or quantize converts it. One policy
// for both commands, so a synthesized model and a requantized one agree (docs/tools.md):
//   - 1-D tensors (norm weights): F32, always.
//   - Token embedding and LM head (token_embd.weight, output.weight): the requested type, except
//     that ternary types give Q8_0 — ternarizing a lookup table or the logit projection destroys
//     it, so these stay high precision, but not F16: with tied embeddings this one matrix is
//     what a decode step reads most of after the ternary layers (BitNet-700M: 98 MB in F16 next
//     to 175 MB of TQ2_0 layers; 52 MB in Q8_0), and decode is bound by bytes read. Q8_0 costs
//     ~1e-3 relative error per logit (8-bit codes, a scale per 32). llama.cpp's quantize makes
//     the same trade with Q6_K for the output/tied embedding of TQ1_0/TQ2_0 files; bitfleet has
//     no K-quants, and Q8_0 is the closest type at or above that precision (docs/perf.md).
//     --embedding-type overrides (f16 restores full precision).
//   - Every other 2-D matrix: the requested type.
//   - A row length that is not a whole number of the chosen type's blocks falls back to F16
//     (any row length; holds ternary weights with fp16 scales exactly, so a later ternary
//     requantization stays lossless).
//   - Tensors of rank 3 or more are copied unchanged.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/dtype.h"
#include "core/status.h"

namespace bitfleet::quantize {

enum class TensorRole {
  kVector,     // 1-D: norm weights (and any bias)
  kEmbedding,  // token_embd.weight
  kOutput,     // output.weight (the LM head when not tied)
  kMatrix,     // every other 2-D weight
  kOther,      // rank 3 or more: left alone
};

// Classifies a tensor by its name and number of dimensions.
TensorRole ClassifyTensor(std::string_view name, size_t n_dims);

// Types a model's weights can be written in: f32 f16 bf16 q8_0 q4_0 q4_1 tq1_0 tq2_0 i2_s
// (case-insensitive). InvalidArgument lists them for anything else.
StatusOr<DType> ParseWeightType(std::string_view name);
// "f32, f16, ..., i2_s" for help texts and errors.
std::string WeightTypeList();

inline constexpr DType kFallbackType = DType::kF16;

struct TypePolicy {
  DType type = DType::kF16;             // for weight matrices
  std::optional<DType> embedding_type;  // token_embd / output; unset: DefaultEmbeddingType
};

// The embedding / LM head type when none is requested: `type`, or Q8_0 for ternary types.
DType DefaultEmbeddingType(DType type);

struct TypeChoice {
  DType type = DType::kF32;
  // Empty when `type` is what the policy asked for; otherwise why it fell back.
  std::string fallback_reason;
};

// The type for a tensor of `role` whose rows hold `row_elems` elements. kOther is not a
// conversion target; it returns F32 and callers keep such tensors as they are.
TypeChoice ChooseType(const TypePolicy& policy, TensorRole role, uint64_t row_elems);

// llama.cpp's general.file_type (enum llama_ftype) for a model whose matrices are `type`:
// 0 f32, 1 f16, 2 q4_0, 3 q4_1, 7 q8_0, 32 bf16, 36 tq1_0, 37 tq2_0, and 40 for i2_s as
// bitnet.cpp numbers it (upstream llama.cpp has no I2_S).
uint32_t FileTypeFor(DType type);

}  // namespace bitfleet::quantize

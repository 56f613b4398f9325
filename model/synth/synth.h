// `bitfleet synth`: writes a complete, runnable GGUF model with random weights — hyperparameters,
// a SentencePiece-style tokenizer and every tensor the architecture needs — from a seed. The
// bytes are a pure function of the options: identical on every machine for a seed.
//
// Weights (docs/tools.md):
//   - norm and sub-norm weights: F32, 1 + k/1024 with k uniform in [-64, 64];
//   - token embedding and LM head: Gaussian-like, std 2/sqrt(n_embd) (logits of std ~2);
//   - llama matrices: Gaussian-like, std 1/sqrt(fan_in), divided by sqrt(2 n_layer) for the two
//     projections that add into the residual stream (attn_output, ffn_down);
//   - bitnet matrices: ternary {-s, 0, +s} (P = 1/3 each) with one fp16 scale s per tensor,
//     sized like the llama std, so TQ1_0, TQ2_0 and I2_S hold them exactly.
// Types follow model/quantize/type_policy.h (norms F32, embedding Q8_0 for ternary types,
// per-tensor F16 fallback for rows that are not whole blocks).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"
#include "model/synth/weight_init.h"

namespace bitfleet::synth {

struct SynthOptions {
  model::ModelConfig config;             // checked with CheckSynthConfig
  DType type = DType::kF16;              // weight matrices
  std::optional<DType> embedding_type;   // token_embd / output; unset: policy default
  uint64_t seed = 0;
  std::string preset;                    // recorded in bitfleet.synth.preset (may be empty)
};

struct SynthTensor {
  std::string name;
  std::vector<uint64_t> shape;  // GGUF order: shape[0] is the row length
  DType type = DType::kF32;
  std::string fallback_reason;  // non-empty when `type` is the policy's fallback
  WeightSpec weights;
};

// The tensors of the model, in file order (token_embd, layers, output_norm, output).
StatusOr<std::vector<SynthTensor>> PlanSynthTensors(const SynthOptions& options);

// A writer holding the model: hyperparameters (WriteModelConfig), general.file_type,
// bitfleet.synth.{seed,preset}, the tokenizer, and one filler per tensor that generates and
// encodes its values when the file is written (one tensor in memory at a time).
StatusOr<gguf::GgufWriter> BuildSynthWriter(const SynthOptions& options);

struct SynthSummary {
  size_t tensors = 0;
  size_t fallbacks = 0;
  uint64_t parameters = 0;
  uint64_t file_bytes = 0;
};

// Writes the model to `path` (temporary file + rename). Logs the plan's fallbacks and a summary;
// `progress` receives (tensors done, total).
StatusOr<SynthSummary> SynthesizeModel(const SynthOptions& options, const std::string& path,
                                       const std::function<void(size_t, size_t)>& progress = nullptr);

}  // namespace bitfleet::synth

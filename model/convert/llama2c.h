// Converter from llama2.c checkpoints (Karpathy's "version 0" / legacy export) to llama-arch
// GGUF files that bitfleet and llama.cpp both load. docs/models.md describes the mapping.
//
// Checkpoint layout (little-endian): seven int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len), then float32 arrays, each row-major [out][in]:
//   token_embedding [vocab][dim], rms_att [L][dim], wq [L][dim][dim],
//   wk [L][kv_dim][dim], wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim],
//   w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim],
//   freq_cis_real + freq_cis_imag [seq_len][head_size/2] each (unused),
//   wcls [vocab][dim] only when vocab_size < 0 (unshared classifier; |vocab_size| tokens).
// A row-major [out][in] matrix is exactly a ggml tensor of shape [in, out], so weights are
// copied unchanged. Q and K need no permutation either: llama2.c rotates consecutive pairs,
// which is llama.cpp's LLAMA_ROPE_TYPE_NORM for the llama arch (HF checkpoints need the
// permutation only because HF rotates halves).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "core/dtype.h"
#include "core/status.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"

namespace bitfleet::convert {

inline constexpr size_t kLlama2cHeaderBytes = 7 * sizeof(int32_t);

struct Llama2cHeader {
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  // negative: unshared classifier (wcls follows)
  int32_t seq_len = 0;
};

// Byte offsets of every array of a validated checkpoint.
struct Llama2cLayout {
  Llama2cHeader header;
  uint32_t n_vocab = 0;  // |vocab_size|
  bool shared_classifier = true;
  uint32_t head_size = 0;
  uint32_t kv_dim = 0;
  uint64_t token_embedding = 0;
  uint64_t rms_att = 0;
  uint64_t wq = 0;
  uint64_t wk = 0;
  uint64_t wv = 0;
  uint64_t wo = 0;
  uint64_t rms_ffn = 0;
  uint64_t w1 = 0;
  uint64_t w2 = 0;
  uint64_t w3 = 0;
  uint64_t rms_final = 0;
  uint64_t freq_cis = 0;
  uint64_t wcls = 0;  // meaningful only when !shared_classifier
  uint64_t file_bytes = 0;
};

// Validates the header (ranges, divisibility) and that the file is exactly as long as the
// header implies; errors say which field or how many bytes are off. Newer llama2.c formats
// (magic "ak42") are recognized and refused with a hint.
StatusOr<Llama2cLayout> ParseLlama2cCheckpoint(std::span<const uint8_t> bytes);

// The hyperparameters of a checkpoint as a llama-arch config (rms_eps 1e-5 and rope base
// 10000, as llama2.c hard-codes them).
model::ModelConfig Llama2cModelConfig(const Llama2cLayout& layout, const std::string& name);

struct Llama2cOptions {
  DType weight_type = DType::kF32;  // F32 or F16 for the 2-D weights; norms stay F32
  std::string name;                 // general.name
};

// Adds the config, tokenizer and every tensor of the checkpoint to `writer`. Tensor data is
// read from `checkpoint` when the writer writes, so `checkpoint` must outlive that call.
StatusOr<model::ModelConfig> AddLlama2cModel(std::span<const uint8_t> checkpoint,
                                             std::span<const uint8_t> tokenizer,
                                             const Llama2cOptions& options, gguf::GgufWriter& writer);

// Converts files: maps the checkpoint and tokenizer, writes `output_path` (atomically), then
// re-opens it and checks config and tensors as a loader would. `progress` gets
// (tensors written, total). An empty options.name becomes the checkpoint's file stem.
Status ConvertLlama2cFile(const std::string& checkpoint_path, const std::string& tokenizer_path,
                          const std::string& output_path, Llama2cOptions options,
                          const std::function<void(size_t, size_t)>& progress = nullptr);

}  // namespace bitfleet::convert

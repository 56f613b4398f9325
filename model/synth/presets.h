// Model shapes for synthetic models: four presets per architecture, from seconds-fast test
// models to the shape of BitNet b1.58 2B4T. docs/tools.md lists them.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"
#include "model/arch/model_config.h"

namespace bitfleet::synth {

enum class Preset {
  kTiny,    // unit and end-to-end tests: ~2.2M parameters, milliseconds to write
  kSmall,   // ~100M parameters, splits evenly at TP=2 and TP=4 for every weight type
  kMedium,  // shaped like BitNet b1.58-large ("700M": 1bitLLM/bitnet_b1_58-large)
  kLarge,   // shaped like BitNet b1.58 2B4T (microsoft/bitnet-b1.58-2B-4T)
};

// Parses "tiny" | "small" | "medium" | "large"; InvalidArgument names the accepted values.
StatusOr<Preset> ParsePreset(std::string_view name);
const char* PresetName(Preset preset);

// An architecture as named on the command line and written to general.architecture.
struct ArchChoice {
  model::Arch arch = model::Arch::kLlama;
  std::string name;  // "llama", "bitnet", "bitnet-b1.58" or "qwen2"
};

// Parses "llama" | "bitnet" | "bitnet-b1.58" | "qwen2" (case-insensitive); InvalidArgument
// otherwise.
StatusOr<ArchChoice> ParseSynthArch(std::string_view name);

// The preset's hyperparameters for `arch`. Fills every field as the reference implementations
// run the architecture: "llama" and "bitnet" (1bitLLM) use SiLU, "bitnet-b1.58" (2B4T) squared
// ReLU; bitnet models have sub-norms, NEOX RoPE and an LM head tied to the embedding; qwen2
// models Q/K/V biases and NEOX RoPE.
model::ModelConfig PresetConfig(const ArchChoice& arch, Preset preset);

// Sets the FFN activation. For the bitnet family the architecture name follows it ("bitnet" for
// SiLU, "bitnet-b1.58" for squared ReLU), because bitnet.cpp picks the activation from the name.
// Returns true when the name changed.
bool SetActivation(model::ModelConfig& config, model::Activation activation);

// Checks that the hyperparameters form a model synth can write: model::ValidateModelConfig, plus
// n_head dividing n_embd with head_dim = n_embd / n_head, and a vocabulary that holds the
// tokenizer's 259 special and byte tokens.
Status CheckSynthConfig(const model::ModelConfig& config);

}  // namespace bitfleet::synth

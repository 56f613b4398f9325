#include "model/synth/presets.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace bitfleet::synth {
namespace {

// Tokenizer: <unk>, <s>, </s> and the 256 byte tokens come first (model/synth/synth_vocab.h).
constexpr uint32_t kMinVocab = 259;

struct Shape {
  uint32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
  float rope_base;
};

Shape PresetShape(Preset preset) {
  switch (preset) {
    case Preset::kTiny:
      // 256-wide rows hold one TQ1_0/TQ2_0 block; n_ff = 1024 still splits into whole 256
      // blocks at TP=4. 4 heads / 2 KV heads: KV heads split at TP=2, replicate at TP=4.
      return {1024, 256, 2, 4, 2, 1024, 512, 10000.0f};
    case Preset::kSmall:
      // ~104M parameters. Every dimension / 4 is a multiple of 256, so every matrix splits at
      // TP=2 and TP=4 for every type (TQ K-splits need whole 256 blocks).
      return {32000, 1024, 8, 16, 4, 2048, 2048, 10000.0f};
    case Preset::kMedium:
      // 1bitLLM/bitnet_b1_58-large config.json (vocab 32002 includes <pad> and </line>).
      return {32002, 1536, 24, 16, 16, 4096, 2048, 10000.0f};
    case Preset::kLarge:
      // microsoft/bitnet-b1.58-2B-4T config.json.
      return {128256, 2560, 30, 20, 5, 6912, 4096, 500000.0f};
  }
  return {};
}

}  // namespace

StatusOr<Preset> ParsePreset(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  for (Preset p : {Preset::kTiny, Preset::kSmall, Preset::kMedium, Preset::kLarge}) {
    if (lower == PresetName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset '", std::string(name), "' (expected tiny, small, medium or large)"));
}

const char* PresetName(Preset preset) {
  switch (preset) {
    case Preset::kTiny:
      return "tiny";
    case Preset::kSmall:
      return "small";
    case Preset::kMedium:
      return "medium";
    case Preset::kLarge:
      return "large";
  }
  return "?";
}

StatusOr<ArchChoice> ParseSynthArch(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  StatusOr<model::Arch> arch = model::ParseArch(lower);
  if (!arch.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown architecture '", std::string(name),
                                                   "' (expected llama, bitnet, bitnet-b1.58 or qwen2)"));
  }
  return ArchChoice{*arch, lower};
}

model::ModelConfig PresetConfig(const ArchChoice& arch, Preset preset) {
  const Shape shape = PresetShape(preset);
  model::ModelConfig config;
  config.arch = arch.arch;
  config.arch_name = arch.name;
  config.name = absl::StrCat("bitfleet-synth-", arch.name, "-", PresetName(preset));
  config.n_vocab = shape.n_vocab;
  config.n_embd = shape.n_embd;
  config.n_layer = shape.n_layer;
  config.n_head = shape.n_head;
  config.n_head_kv = shape.n_head_kv;
  config.n_ff = shape.n_ff;
  config.n_ctx_train = shape.n_ctx;
  config.head_dim = shape.n_embd / shape.n_head;
  config.rope_dim = config.head_dim;
  config.rope_freq_base = shape.rope_base;
  config.rms_eps = 1e-5f;
  const bool bitnet = arch.arch == model::Arch::kBitnet;
  // As ReadModelConfig derives them: the bitnet and qwen2 converters keep HF's (NEOX) RoPE
  // order, and both published BitNet b1.58 families tie the LM head to the embedding.
  config.rope_type = arch.arch == model::Arch::kLlama ? model::RopeType::kNorm : model::RopeType::kNeox;
  config.has_sub_norms = bitnet;
  config.qkv_bias = arch.arch == model::Arch::kQwen2;
  config.tied_embeddings = bitnet;
  config.activation = arch.name == "bitnet-b1.58" ? model::Activation::kRelu2 : model::Activation::kSilu;
  return config;
}

bool SetActivation(model::ModelConfig& config, model::Activation activation) {
  config.activation = activation;
  if (config.arch != model::Arch::kBitnet) return false;
  const std::string name = activation == model::Activation::kRelu2 ? "bitnet-b1.58" : "bitnet";
  if (name == config.arch_name) return false;
  config.arch_name = name;
  return true;
}

Status CheckSynthConfig(const model::ModelConfig& c) {
  if (c.n_head == 0 || c.n_embd % c.n_head != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_embd ", c.n_embd, " is not a multiple of n_head ", c.n_head));
  }
  if (c.head_dim != c.n_embd / c.n_head) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", c.head_dim, " must equal n_embd / n_head (",
                                                   c.n_embd / c.n_head, ")"));
  }
  if (c.n_vocab < kMinVocab) {
    return absl::InvalidArgumentError(absl::StrCat("n_vocab ", c.n_vocab, " is below ", kMinVocab,
                                                   " (<unk>, <s>, </s> and 256 byte tokens)"));
  }
  return model::ValidateModelConfig(c);
}

}  // namespace bitfleet::synth

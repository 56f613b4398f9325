// Reading, checking and writing the hyperparameters of llama / bitnet / bitnet-b1.58 files.
// The choices that are not obvious from the key names (activation, rope type, defaults) follow
// llama.cpp and bitnet.cpp; docs/models.md records where each comes from.
#include "model/arch/model_config.h"

#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"

namespace bitfleet::model {
namespace {

std::string Str(std::string_view sv) { return std::string(sv); }

// Looks up `{arch}.{suffix}`; nullptr when absent.
const gguf::Value* FindArchKey(const gguf::GgufFile& file, const std::string& arch,
                               const char* suffix) {
  return file.Find(keys::ArchKey(arch, suffix));
}

Status KeyError(const std::string& key, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("model key ", key, ": ", problem));
}

// Re-labels a value-level error (which does not know its key) with the key.
Status KeyError(const std::string& key, const Status& status) {
  return KeyError(key, std::string(status.message()));
}

// An integer key that may also be stored as a per-layer array (llama.cpp accepts both for
// feed_forward_length and the head counts); bitfleet needs every layer to agree.
StatusOr<uint32_t> ReadUniformU32(const gguf::Value& value, const std::string& key) {
  if (value.type() != gguf::ValueType::kArray) {
    StatusOr<uint32_t> v = value.AsU32();
    if (!v.ok()) return KeyError(key, v.status());
    return *v;
  }
  const gguf::Array* array = *value.AsArray();
  if (array->items.empty()) return KeyError(key, "empty per-layer array");
  std::optional<uint32_t> first;
  for (const gguf::Value& item : array->items) {
    StatusOr<uint32_t> v = item.AsU32();
    if (!v.ok()) return KeyError(key, v.status());
    if (first && *first != *v) {
      return KeyError(key, "per-layer values differ; bitfleet needs one value for every layer");
    }
    first = *v;
  }
  return *first;
}

// Reads an optional integer key; returns `fallback` when absent.
StatusOr<uint32_t> ReadU32(const gguf::GgufFile& file, const std::string& arch,
                           const char* suffix, std::optional<uint32_t> fallback) {
  const std::string key = keys::ArchKey(arch, suffix);
  const gguf::Value* value = file.Find(key);
  if (value == nullptr) {
    if (fallback) return *fallback;
    return KeyError(key, "missing (required)");
  }
  return ReadUniformU32(*value, key);
}

StatusOr<float> ReadF32(const gguf::GgufFile& file, const std::string& arch, const char* suffix,
                        std::optional<float> fallback) {
  const std::string key = keys::ArchKey(arch, suffix);
  const gguf::Value* value = file.Find(key);
  if (value == nullptr) {
    if (fallback) return *fallback;
    return KeyError(key, "missing (required)");
  }
  StatusOr<float> v = value->AsF32();
  if (!v.ok()) return KeyError(key, v.status());
  return *v;
}

StatusOr<std::optional<std::string>> ReadOptionalString(const gguf::GgufFile& file,
                                                        const std::string& key) {
  const gguf::Value* value = file.Find(key);
  if (value == nullptr) return std::optional<std::string>();
  StatusOr<std::string_view> v = value->AsString();
  if (!v.ok()) return KeyError(key, v.status());
  return std::optional<std::string>(Str(*v));
}

// The activation the reference implementations use for each architecture: llama.cpp and
// bitnet.cpp run "llama" and "bitnet" with SiLU (LLM_FFN_SILU) and bitnet.cpp runs
// "bitnet-b1.58" (BitNet b1.58 2B4T, HF hidden_act "relu2") with LLM_FFN_RELU_SQR.
Activation DefaultActivation(std::string_view arch_name) {
  return arch_name == "bitnet-b1.58" ? Activation::kRelu2 : Activation::kSilu;
}

StatusOr<Activation> ReadActivation(const gguf::GgufFile& file, const std::string& arch) {
  for (const char* suffix : {keys::kFeedForwardActivation, keys::kHiddenActivation}) {
    const std::string key = keys::ArchKey(arch, suffix);
    BF_ASSIGN_OR_RETURN(std::optional<std::string> name, ReadOptionalString(file, key));
    if (!name) continue;
    StatusOr<Activation> activation = ParseActivation(*name);
    if (!activation.ok()) return KeyError(key, activation.status());
    return *activation;
  }
  return DefaultActivation(arch);
}

// bitfleet implements plain RoPE only. Files may still say "none", or "linear" with factor 1
// (bitnet.cpp's converter writes exactly that); anything else would silently change results.
Status CheckRopeScaling(const gguf::GgufFile& file, const std::string& arch) {
  const std::string type_key = keys::ArchKey(arch, keys::kRopeScalingType);
  BF_ASSIGN_OR_RETURN(std::optional<std::string> type, ReadOptionalString(file, type_key));
  BF_ASSIGN_OR_RETURN(float factor, ReadF32(file, arch, keys::kRopeScalingFactor, 1.0f));
  const bool no_scaling = !type || *type == "none" || (*type == "linear" && factor == 1.0f);
  if (no_scaling) return absl::OkStatus();
  return KeyError(type_key, absl::StrCat("rope scaling '", *type, "' with factor ", factor,
                                         " is not supported"));
}

// Entries of tokenizer.ggml.tokens; nullopt when the file has no tokenizer.
StatusOr<std::optional<uint64_t>> TokenCount(const gguf::GgufFile& file) {
  const gguf::Value* tokens = file.Find(keys::kTokenizerTokens);
  if (tokens == nullptr) return std::optional<uint64_t>();
  StatusOr<const gguf::Array*> array = tokens->AsArray();
  if (!array.ok()) return KeyError(keys::kTokenizerTokens, array.status());
  return std::optional<uint64_t>((*array)->items.size());
}

// Vocabulary size: {arch}.vocab_size, else the tokenizer's token count, else the rows of
// token_embd.weight (llama.cpp's order of preference). Tokenizer, key and embedding must
// agree where present.
StatusOr<uint32_t> ReadVocab(const gguf::GgufFile& file, const std::string& arch) {
  const std::string vocab_key = keys::ArchKey(arch, keys::kVocabSize);
  BF_ASSIGN_OR_RETURN(std::optional<uint64_t> token_count, TokenCount(file));
  BF_RETURN_IF_ERROR(CheckTokenizerMatchesEmbedding(file));
  if (const gguf::Value* value = file.Find(vocab_key)) {
    BF_ASSIGN_OR_RETURN(uint32_t n_vocab, ReadUniformU32(*value, vocab_key));
    // A tokenizer that can emit ids beyond the embedding would index out of bounds; one with
    // fewer tokens cannot decode every id the model samples.
    if (token_count && *token_count != n_vocab) {
      return KeyError(vocab_key, absl::StrCat("tokenizer has ", *token_count, " tokens (",
                                              keys::kTokenizerTokens, ") but ", vocab_key, " is ", n_vocab));
    }
    return n_vocab;
  }
  if (token_count) {
    if (*token_count > limits::kMaxVocab) {
      return KeyError(keys::kTokenizerTokens, absl::StrCat(*token_count, " tokens exceed the cap of ",
                                                           limits::kMaxVocab));
    }
    return static_cast<uint32_t>(*token_count);
  }
  const gguf::TensorInfo* embd = file.FindTensor(tensor_names::kTokenEmbd);
  if (embd != nullptr && embd->shape.size() >= 2 && embd->shape[1] <= limits::kMaxVocab) {
    return static_cast<uint32_t>(embd->shape[1]);
  }
  return KeyError(vocab_key, absl::StrCat("missing, and neither ", keys::kTokenizerTokens,
                                          " nor a 2-D ", tensor_names::kTokenEmbd, " gives the vocabulary size"));
}

Status CheckRange(const std::string& arch, const char* suffix, uint64_t value, uint64_t lo,
                  uint64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return KeyError(keys::ArchKey(arch, suffix),
                  absl::StrCat("value ", value, " is outside [", lo, ", ", hi, "]"));
}

}  // namespace

Status CheckTokenizerMatchesEmbedding(const gguf::GgufFile& file) {
  BF_ASSIGN_OR_RETURN(std::optional<uint64_t> token_count, TokenCount(file));
  const gguf::TensorInfo* embd = file.FindTensor(tensor_names::kTokenEmbd);
  if (!token_count || embd == nullptr || embd->shape.size() < 2) return absl::OkStatus();
  const uint64_t rows = embd->shape[1];
  if (*token_count == rows) return absl::OkStatus();
  return KeyError(keys::kTokenizerTokens,
                  absl::StrCat("tokenizer has ", *token_count, " tokens but the model's embedding has ", rows,
                               " rows (", tensor_names::kTokenEmbd, ")"));
}

std::string keys::ArchKey(std::string_view arch_name, std::string_view suffix) {
  return absl::StrCat(Str(arch_name), ".", Str(suffix));
}

std::string tensor_names::Layer(uint32_t layer, const std::string& suffix) {
  return absl::StrCat("blk.", layer, ".", suffix);
}

std::string tensor_names::ScaleOf(const std::string& weight_suffix) {
  constexpr std::string_view kWeight = ".weight";
  std::string_view base = weight_suffix;
  if (base.size() > kWeight.size() && base.substr(base.size() - kWeight.size()) == kWeight) {
    base.remove_suffix(kWeight.size());
  }
  return absl::StrCat(Str(base), ".scale");
}

const std::vector<std::string>& tensor_names::ProjectionSuffixes() {
  static const std::vector<std::string> kSuffixes = {kAttnQ,   kAttnK,  kAttnV,  kAttnOutput,
                                                     kFfnGate, kFfnUp,  kFfnDown};
  return kSuffixes;
}

std::string_view ArchEnumName(Arch arch) {
  switch (arch) {
    case Arch::kLlama:
      return "llama";
    case Arch::kBitnet:
      return "bitnet";
    case Arch::kQwen2:
      return "qwen2";
  }
  return "?";
}

std::string_view ActivationName(Activation activation) {
  return activation == Activation::kSilu ? "silu" : "relu2";
}

std::string_view RopeTypeName(RopeType rope_type) {
  return rope_type == RopeType::kNorm ? "norm" : "neox";
}

StatusOr<Activation> ParseActivation(std::string_view name) {
  if (name == "silu" || name == "swish" || name == "swiglu") return Activation::kSilu;
  if (name == "relu2" || name == "relu_squared" || name == "relu_sqr") return Activation::kRelu2;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown feed-forward activation '", Str(name), "' (expected silu or relu2)"));
}

StatusOr<Arch> ParseArch(std::string_view arch_name) {
  if (arch_name == "llama") return Arch::kLlama;
  if (arch_name == "bitnet" || arch_name == "bitnet-b1.58") return Arch::kBitnet;
  if (arch_name == "qwen2") return Arch::kQwen2;
  return absl::InvalidArgumentError(
      absl::StrCat("model key ", keys::kArchitecture, ": architecture '", Str(arch_name),
                   "' is not supported (bitfleet runs llama, bitnet, bitnet-b1.58, qwen2)"));
}

StatusOr<ModelConfig> ReadModelConfig(const gguf::GgufFile& file) {
  ModelConfig config;
  const gguf::Value* arch_value = file.Find(keys::kArchitecture);
  if (arch_value == nullptr) return KeyError(keys::kArchitecture, "missing (required)");
  StatusOr<std::string_view> arch_name = arch_value->AsString();
  if (!arch_name.ok()) return KeyError(keys::kArchitecture, arch_name.status());
  config.arch_name = Str(*arch_name);
  BF_ASSIGN_OR_RETURN(config.arch, ParseArch(config.arch_name));
  const std::string& arch = config.arch_name;

  if (const gguf::Value* name = file.Find(keys::kName)) {
    StatusOr<std::string_view> v = name->AsString();
    if (!v.ok()) return KeyError(keys::kName, v.status());
    config.name = Str(*v);
  }

  BF_ASSIGN_OR_RETURN(config.n_ctx_train, ReadU32(file, arch, keys::kContextLength, std::nullopt));
  BF_ASSIGN_OR_RETURN(config.n_embd, ReadU32(file, arch, keys::kEmbeddingLength, std::nullopt));
  BF_ASSIGN_OR_RETURN(config.n_layer, ReadU32(file, arch, keys::kBlockCount, std::nullopt));
  BF_ASSIGN_OR_RETURN(config.n_ff, ReadU32(file, arch, keys::kFeedForwardLength, std::nullopt));
  BF_ASSIGN_OR_RETURN(config.n_head, ReadU32(file, arch, keys::kHeadCount, std::nullopt));
  BF_ASSIGN_OR_RETURN(config.n_head_kv, ReadU32(file, arch, keys::kHeadCountKv, config.n_head));
  BF_ASSIGN_OR_RETURN(config.rms_eps, ReadF32(file, arch, keys::kRmsEps, std::nullopt));
  BF_ASSIGN_OR_RETURN(config.rope_freq_base, ReadF32(file, arch, keys::kRopeFreqBase, 10000.0f));
  BF_RETURN_IF_ERROR(CheckRopeScaling(file, arch));

  // Check the divisor before deriving head_dim from it.
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kEmbeddingLength, config.n_embd, 1, limits::kMaxEmbd));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kHeadCount, config.n_head, 1, limits::kMaxHeads));
  const bool has_key_length = FindArchKey(file, arch, keys::kKeyLength) != nullptr;
  if (!has_key_length && config.n_embd % config.n_head != 0) {
    return KeyError(keys::ArchKey(arch, keys::kHeadCount),
                    absl::StrCat(config.n_head, " heads do not divide ", keys::kEmbeddingLength, " ",
                                 config.n_embd, " and no ", keys::kKeyLength, " is given"));
  }
  BF_ASSIGN_OR_RETURN(config.head_dim,
                      ReadU32(file, arch, keys::kKeyLength, config.n_embd / config.n_head));
  BF_ASSIGN_OR_RETURN(uint32_t value_length, ReadU32(file, arch, keys::kValueLength, config.head_dim));
  if (value_length != config.head_dim) {
    return KeyError(keys::ArchKey(arch, keys::kValueLength),
                    absl::StrCat(value_length, " differs from the key length ", config.head_dim,
                                 "; bitfleet needs equal K and V head sizes"));
  }
  BF_ASSIGN_OR_RETURN(config.rope_dim, ReadU32(file, arch, keys::kRopeDimensionCount, config.head_dim));
  BF_ASSIGN_OR_RETURN(config.n_vocab, ReadVocab(file, arch));
  BF_ASSIGN_OR_RETURN(config.activation, ReadActivation(file, arch));

  // The llama converters permute Q/K into consecutive pairs; the bitnet and qwen2 ones keep HF's
  // halves.
  config.rope_type = config.arch == Arch::kLlama ? RopeType::kNorm : RopeType::kNeox;
  config.has_sub_norms = config.arch == Arch::kBitnet;
  config.qkv_bias = config.arch == Arch::kQwen2;
  config.tied_embeddings = file.FindTensor(tensor_names::kOutput) == nullptr;

  BF_RETURN_IF_ERROR(ValidateModelConfig(config));
  return config;
}

Status ValidateModelConfig(const ModelConfig& config) {
  const std::string& arch = config.arch_name;
  BF_ASSIGN_OR_RETURN(Arch parsed, ParseArch(arch));
  if (parsed != config.arch) {
    return KeyError(keys::kArchitecture, absl::StrCat("'", arch, "' does not name the ",
                                                      Str(ArchEnumName(config.arch)), " architecture"));
  }
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kContextLength, config.n_ctx_train, 1, limits::kMaxContext));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kEmbeddingLength, config.n_embd, 1, limits::kMaxEmbd));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kBlockCount, config.n_layer, 1, limits::kMaxLayers));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kFeedForwardLength, config.n_ff, 1, limits::kMaxFeedForward));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kHeadCount, config.n_head, 1, limits::kMaxHeads));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kHeadCountKv, config.n_head_kv, 1, config.n_head));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kVocabSize, config.n_vocab, 1, limits::kMaxVocab));
  BF_RETURN_IF_ERROR(CheckRange(arch, keys::kKeyLength, config.head_dim, 1, limits::kMaxHeadDim));
  if (config.n_head % config.n_head_kv != 0) {
    return KeyError(keys::ArchKey(arch, keys::kHeadCountKv),
                    absl::StrCat(config.n_head_kv, " KV heads do not divide ", config.n_head, " query heads"));
  }
  if (config.rope_dim == 0 || config.rope_dim > config.head_dim || config.rope_dim % 2 != 0) {
    return KeyError(keys::ArchKey(arch, keys::kRopeDimensionCount),
                    absl::StrCat(config.rope_dim, " must be even and in [2, head size ", config.head_dim, "]"));
  }
  if (!std::isfinite(config.rms_eps) || config.rms_eps <= 0.0f || config.rms_eps >= 1.0f) {
    return KeyError(keys::ArchKey(arch, keys::kRmsEps), absl::StrCat(config.rms_eps, " is not in (0, 1)"));
  }
  if (!std::isfinite(config.rope_freq_base) || config.rope_freq_base <= 1.0f ||
      config.rope_freq_base > 1e12f) {
    return KeyError(keys::ArchKey(arch, keys::kRopeFreqBase),
                    absl::StrCat(config.rope_freq_base, " is not in (1, 1e12]"));
  }
  return absl::OkStatus();
}

void WriteModelConfig(const ModelConfig& config, gguf::GgufWriter& writer) {
  std::string arch = config.arch_name;
  StatusOr<Arch> parsed = ParseArch(arch);
  if (!parsed.ok() || *parsed != config.arch) {
    arch = config.arch != Arch::kBitnet ? std::string(ArchEnumName(config.arch))
           : config.activation == Activation::kRelu2 ? "bitnet-b1.58"
                                                      : "bitnet";
  }
  auto key = [&](const char* suffix) { return keys::ArchKey(arch, suffix); };
  writer.SetString(keys::kArchitecture, arch);
  if (!config.name.empty()) writer.SetString(keys::kName, config.name);
  writer.SetU32(key(keys::kContextLength), config.n_ctx_train);
  writer.SetU32(key(keys::kEmbeddingLength), config.n_embd);
  writer.SetU32(key(keys::kBlockCount), config.n_layer);
  writer.SetU32(key(keys::kFeedForwardLength), config.n_ff);
  writer.SetU32(key(keys::kHeadCount), config.n_head);
  writer.SetU32(key(keys::kHeadCountKv), config.n_head_kv);
  writer.SetF32(key(keys::kRmsEps), config.rms_eps);
  writer.SetF32(key(keys::kRopeFreqBase), config.rope_freq_base);
  writer.SetU32(key(keys::kRopeDimensionCount), config.rope_dim);
  // Only when it differs from llama.cpp's default (n_embd / n_head), as its converters do.
  if (config.n_head == 0 || config.n_embd % config.n_head != 0 ||
      config.head_dim != config.n_embd / config.n_head) {
    writer.SetU32(key(keys::kKeyLength), config.head_dim);
    writer.SetU32(key(keys::kValueLength), config.head_dim);
  }
  writer.SetU32(key(keys::kVocabSize), config.n_vocab);
  writer.SetString(key(keys::kFeedForwardActivation), Str(ActivationName(config.activation)));
}

uint64_t ParameterCount(const ModelConfig& config) {
  const uint64_t embd = config.n_embd;
  const uint64_t q_dim = uint64_t{config.n_head} * config.head_dim;
  const uint64_t kv_dim = uint64_t{config.n_head_kv} * config.head_dim;
  const uint64_t ff = config.n_ff;
  uint64_t per_layer = 2 * embd                       // attn_norm, ffn_norm
                       + embd * q_dim * 2             // attn_q, attn_output
                       + embd * kv_dim * 2            // attn_k, attn_v
                       + embd * ff * 3;               // ffn_gate, ffn_up, ffn_down
  if (config.has_sub_norms) per_layer += q_dim + ff;  // attn_sub_norm, ffn_sub_norm
  if (config.qkv_bias) per_layer += q_dim + 2 * kv_dim;  // attn_q/k/v.bias
  const uint64_t embedding = uint64_t{config.n_vocab} * embd;
  return embedding * (config.tied_embeddings ? 1 : 2) + embd + per_layer * config.n_layer;
}

}  // namespace bitfleet::model

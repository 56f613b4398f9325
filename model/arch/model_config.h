// Model hyperparameters per architecture, read from and written to GGUF metadata with the key
// names llama.cpp and bitnet.cpp use ("{arch}.embedding_length", ...). docs/models.md lists
// every key, tensor name and shape, and why each default is what it is.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "model/gguf/gguf.h"

namespace bitfleet::model {

// kQwen2: llama's layer with biases on the Q, K and V projections and NEOX RoPE (Qwen2 and
// Qwen2.5, llama.cpp's "qwen2").
enum class Arch { kLlama, kBitnet, kQwen2 };
// Feed-forward activation applied to the gate before it multiplies the up projection:
// SiLU (llama, the older "bitnet" arch) or squared ReLU, relu(x)^2 (BitNet b1.58 2B4T,
// "bitnet-b1.58").
enum class Activation { kSilu, kRelu2 };
// RoPE pairing, as llama.cpp's rope types. kNorm rotates consecutive pairs (x[2i], x[2i+1])
// (LLAMA_ROPE_TYPE_NORM: the llama arch, whose converters permute HF Q/K weights into this
// order). kNeox rotates (x[i], x[i + rope_dim/2]) (LLAMA_ROPE_TYPE_NEOX: "bitnet",
// "bitnet-b1.58" and "qwen2", whose converters keep the HF order).
enum class RopeType { kNorm, kNeox };

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string arch_name = "llama";  // exactly as in general.architecture ("bitnet-b1.58" kept)
  std::string name;                 // general.name
  uint32_t n_vocab = 0;
  uint32_t n_embd = 0;
  uint32_t n_layer = 0;
  uint32_t n_head = 0;
  uint32_t n_head_kv = 0;
  uint32_t n_ff = 0;
  uint32_t n_ctx_train = 0;
  uint32_t head_dim = 0;            // n_embd / n_head unless the file says otherwise
  uint32_t rope_dim = 0;            // rotated dims per head (default head_dim)
  float rope_freq_base = 10000.0f;
  RopeType rope_type = RopeType::kNorm;
  float rms_eps = 1e-5f;
  Activation activation = Activation::kSilu;
  bool tied_embeddings = false;     // no output.weight: the LM head reuses token_embd.weight
  bool has_sub_norms = false;       // BitNet attn_sub_norm / ffn_sub_norm
  bool qkv_bias = false;            // Qwen2: attn_q.bias, attn_k.bias, attn_v.bias added to the projections

  // Width of the concatenated query heads (rows of attn_q) and of the K/V heads.
  uint32_t q_dim() const { return n_head * head_dim; }
  uint32_t kv_dim() const { return n_head_kv * head_dim; }
};

// Hard caps on hyperparameters read from a file. Real models sit far below them; they exist
// so a hostile header cannot make later size arithmetic overflow or allocate absurd buffers.
namespace limits {
inline constexpr uint32_t kMaxEmbd = 65536;
inline constexpr uint32_t kMaxLayers = 1024;
inline constexpr uint32_t kMaxVocab = 4u << 20;
inline constexpr uint32_t kMaxFeedForward = 1u << 20;
inline constexpr uint32_t kMaxHeads = 4096;
inline constexpr uint32_t kMaxHeadDim = 4096;
inline constexpr uint32_t kMaxContext = 1u << 28;
}  // namespace limits

// Metadata key suffixes; the full key is "{general.architecture}.{suffix}".
namespace keys {
inline constexpr char kArchitecture[] = "general.architecture";
inline constexpr char kName[] = "general.name";
inline constexpr char kContextLength[] = "context_length";
inline constexpr char kEmbeddingLength[] = "embedding_length";
inline constexpr char kBlockCount[] = "block_count";
inline constexpr char kFeedForwardLength[] = "feed_forward_length";
inline constexpr char kHeadCount[] = "attention.head_count";
inline constexpr char kHeadCountKv[] = "attention.head_count_kv";
inline constexpr char kKeyLength[] = "attention.key_length";
inline constexpr char kValueLength[] = "attention.value_length";
inline constexpr char kRmsEps[] = "attention.layer_norm_rms_epsilon";
inline constexpr char kRopeFreqBase[] = "rope.freq_base";
inline constexpr char kRopeDimensionCount[] = "rope.dimension_count";
inline constexpr char kRopeScalingType[] = "rope.scaling.type";
inline constexpr char kRopeScalingFactor[] = "rope.scaling.factor";
inline constexpr char kVocabSize[] = "vocab_size";
// bitfleet's explicit activation ("silu" | "relu2"); wins over the architecture default.
inline constexpr char kFeedForwardActivation[] = "feed_forward_activation";
// Upstream llama.cpp's activation key; honoured when kFeedForwardActivation is absent.
inline constexpr char kHiddenActivation[] = "hidden_activation";
inline constexpr char kTokenizerTokens[] = "tokenizer.ggml.tokens";

// "{arch_name}.{suffix}".
std::string ArchKey(std::string_view arch_name, std::string_view suffix);
}  // namespace keys

// Standard tensor names, as llama.cpp and bitnet.cpp spell them.
namespace tensor_names {
inline constexpr char kTokenEmbd[] = "token_embd.weight";
inline constexpr char kOutputNorm[] = "output_norm.weight";
inline constexpr char kOutput[] = "output.weight";
// Llama 3 rope scaling factors; bitfleet does not implement them and refuses such files.
inline constexpr char kRopeFreqs[] = "rope_freqs.weight";
// Per-layer suffixes.
inline constexpr char kAttnNorm[] = "attn_norm.weight";
inline constexpr char kAttnQ[] = "attn_q.weight";
inline constexpr char kAttnK[] = "attn_k.weight";
inline constexpr char kAttnV[] = "attn_v.weight";
inline constexpr char kAttnOutput[] = "attn_output.weight";
inline constexpr char kAttnSubNorm[] = "attn_sub_norm.weight";  // BitNet
inline constexpr char kAttnQBias[] = "attn_q.bias";  // Qwen2: F32, one per output row
inline constexpr char kAttnKBias[] = "attn_k.bias";
inline constexpr char kAttnVBias[] = "attn_v.bias";
inline constexpr char kFfnNorm[] = "ffn_norm.weight";
inline constexpr char kFfnGate[] = "ffn_gate.weight";
inline constexpr char kFfnUp[] = "ffn_up.weight";
inline constexpr char kFfnDown[] = "ffn_down.weight";
inline constexpr char kFfnSubNorm[] = "ffn_sub_norm.weight";  // BitNet
// Optional per-tensor scale of a BitNet projection: "blk.N.attn_q.scale", one F32 that
// multiplies the projection's output (llama.cpp loads these as TENSOR_NOT_REQUIRED).
std::string ScaleOf(const std::string& weight_suffix);  // "attn_q.weight" -> "attn_q.scale"
// The seven projections that may carry a scale, as weight suffixes.
const std::vector<std::string>& ProjectionSuffixes();
// Per-layer: "blk.{layer}.{suffix}", e.g. Layer(3, "attn_q.weight").
std::string Layer(uint32_t layer, const std::string& suffix);
}  // namespace tensor_names

// Names used in metadata and on the command line.
std::string_view ArchEnumName(Arch arch);             // "llama" | "bitnet" | "qwen2"
std::string_view ActivationName(Activation activation);  // "silu" | "relu2"
std::string_view RopeTypeName(RopeType rope_type);       // "norm" | "neox"
// Accepts "silu" (also "swish", "swiglu") and "relu2" (also "relu_squared", "relu_sqr").
StatusOr<Activation> ParseActivation(std::string_view name);

// Maps general.architecture to an Arch: "llama", "bitnet", "bitnet-b1.58", "qwen2".
StatusOr<Arch> ParseArch(std::string_view arch_name);

// Reads the hyperparameters of a llama / bitnet / bitnet-b1.58 file; every error is
// InvalidArgument and names the missing or invalid key. From the tensor directory it reads
// only whether output.weight exists (tied embeddings) and the row count of token_embd.weight
// (the vocabulary size when neither {arch}.vocab_size nor tokenizer.ggml.tokens is present).
// A tokenizer's token count must equal {arch}.vocab_size and token_embd.weight's rows, where
// those are present (CheckTokenizerMatchesEmbedding).
StatusOr<ModelConfig> ReadModelConfig(const gguf::GgufFile& file);

// Checks that the tokenizer (tokenizer.ggml.tokens) has exactly as many tokens as
// token_embd.weight has rows, as llama.cpp requires (it sizes the embedding by the token
// count; its converters pad the token list with "[PADn]" entries up to the embedding's rows).
// A shorter tokenizer cannot decode ids the model samples; a longer one can feed the model ids
// past its embedding. OK when the file has no tokenizer or no 2-D token_embd.weight (vocab-only
// files). InvalidArgument: "tokenizer has N tokens but the model's embedding has M rows".
Status CheckTokenizerMatchesEmbedding(const gguf::GgufFile& file);

// Checks a config's internal consistency and the caps in `limits`: InvalidArgument naming the
// offending key. ReadModelConfig runs it; writers (converters, synth) should too.
Status ValidateModelConfig(const ModelConfig& config);

// Checks that every tensor the architecture needs is present with the shape the config
// implies (ggml order) and a type that fits its role (norms and scales F32, matrices a float
// or quantized weight type); errors name the tensor and both shapes. Also refuses
// rope_freqs.weight (rope scaling bitfleet does not implement) and a tokenizer whose token
// count differs from the embedding's rows (CheckTokenizerMatchesEmbedding).
Status ValidateTensors(const ModelConfig& config, const gguf::GgufFile& file);

// Writes general.architecture, general.name (when set) and every hyperparameter key of
// `config` into `writer`, including the keys llama.cpp requires to load a llama file
// ({arch}.rope.dimension_count, {arch}.vocab_size, ...) and bitfleet's
// {arch}.feed_forward_activation. An arch_name that does not belong to config.arch is replaced
// by the reference name for the activation ("llama"; "bitnet" for SiLU, "bitnet-b1.58" for
// squared ReLU, as bitnet.cpp runs them).
void WriteModelConfig(const ModelConfig& config, gguf::GgufWriter& writer);

// Total parameters implied by the config (embedding counted once when tied; per-tensor
// scales not counted).
uint64_t ParameterCount(const ModelConfig& config);

}  // namespace bitfleet::model

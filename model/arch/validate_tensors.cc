// ValidateTensors: every tensor the forward pass will touch exists, with the ggml-order shape
// the config implies and a type that fits its role. Runs before any weight is read, so a
// mismatched or hostile file fails with a message naming the tensor instead of reading out of
// bounds later. The tokenizer must cover exactly the embedding's rows (every id the model can
// sample decodes, every id the tokenizer produces has a row).
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/arch/model_config.h"

namespace bitfleet::model {
namespace {

enum class Role {
  kNorm,    // 1-D RMSNorm weight or bias: F32, as llama.cpp's converters always store them
  kMatrix,  // 2-D weight: any float or block-quantized weight type
  kScale,   // optional per-tensor scale of a BitNet projection: one F32
};

std::string ShapeString(const std::vector<uint64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Shapes compare as ggml does: missing trailing dims count as 1, so [64] equals [64, 1].
bool SameShape(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const uint64_t da = i < a.size() ? a[i] : 1;
    const uint64_t db = i < b.size() ? b[i] : 1;
    if (da != db) return false;
  }
  return true;
}

bool IsWeightType(DType type) {
  switch (type) {
    case DType::kI8:
    case DType::kI16:
    case DType::kI32:
    case DType::kF64:
      return false;
    default:
      return true;
  }
}

Status CheckTensor(const gguf::TensorInfo& tensor, const std::vector<uint64_t>& expected, Role role) {
  if (!SameShape(tensor.shape, expected)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, " has shape ",
                                                   ShapeString(tensor.shape), " but the config implies ",
                                                   ShapeString(expected)));
  }
  const bool type_ok = role == Role::kMatrix ? IsWeightType(tensor.type) : tensor.type == DType::kF32;
  if (!type_ok) {
    const char* wanted = role == Role::kMatrix ? "a float or quantized weight type" : "f32";
    return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, " has type ",
                                                   DTypeName(tensor.type), "; its role needs ", wanted));
  }
  return absl::OkStatus();
}

Status Require(const gguf::GgufFile& file, const std::string& name, const std::vector<uint64_t>& shape,
               Role role) {
  const gguf::TensorInfo* tensor = file.FindTensor(name);
  if (tensor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is missing (expected shape ",
                                                   ShapeString(shape), ")"));
  }
  return CheckTensor(*tensor, shape, role);
}

Status CheckIfPresent(const gguf::GgufFile& file, const std::string& name,
                      const std::vector<uint64_t>& shape, Role role) {
  const gguf::TensorInfo* tensor = file.FindTensor(name);
  return tensor == nullptr ? absl::OkStatus() : CheckTensor(*tensor, shape, role);
}

}  // namespace

Status ValidateTensors(const ModelConfig& config, const gguf::GgufFile& file) {
  namespace tn = tensor_names;
  const uint64_t embd = config.n_embd;
  const uint64_t vocab = config.n_vocab;
  const uint64_t q_dim = uint64_t{config.n_head} * config.head_dim;
  const uint64_t kv_dim = uint64_t{config.n_head_kv} * config.head_dim;
  const uint64_t ff = config.n_ff;

  // Before the shape checks, so a tokenizer/embedding mismatch is reported as such.
  BF_RETURN_IF_ERROR(CheckTokenizerMatchesEmbedding(file));
  BF_RETURN_IF_ERROR(Require(file, tn::kTokenEmbd, {embd, vocab}, Role::kMatrix));
  BF_RETURN_IF_ERROR(Require(file, tn::kOutputNorm, {embd}, Role::kNorm));
  if (config.tied_embeddings) {
    BF_RETURN_IF_ERROR(CheckIfPresent(file, tn::kOutput, {embd, vocab}, Role::kMatrix));
  } else {
    BF_RETURN_IF_ERROR(Require(file, tn::kOutput, {embd, vocab}, Role::kMatrix));
  }
  if (file.FindTensor(tn::kRopeFreqs) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", tn::kRopeFreqs, " (rope frequency scaling, e.g. Llama 3.1) is not supported"));
  }

  // Input width (shape[0]) and output width (shape[1]) of each projection.
  struct Matrix {
    const char* suffix;
    uint64_t in;
    uint64_t out;
  };
  const Matrix matrices[] = {
      {tn::kAttnQ, embd, q_dim},    {tn::kAttnK, embd, kv_dim}, {tn::kAttnV, embd, kv_dim},
      {tn::kAttnOutput, q_dim, embd}, {tn::kFfnGate, embd, ff},   {tn::kFfnUp, embd, ff},
      {tn::kFfnDown, ff, embd},
  };
  for (uint32_t layer = 0; layer < config.n_layer; ++layer) {
    BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, tn::kAttnNorm), {embd}, Role::kNorm));
    BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, tn::kFfnNorm), {embd}, Role::kNorm));
    for (const Matrix& m : matrices) {
      BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, m.suffix), {m.in, m.out}, Role::kMatrix));
      BF_RETURN_IF_ERROR(CheckIfPresent(file, tn::Layer(layer, tn::ScaleOf(m.suffix)), {1}, Role::kScale));
    }
    if (config.qkv_bias) {
      BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, tn::kAttnQBias), {q_dim}, Role::kNorm));
      BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, tn::kAttnKBias), {kv_dim}, Role::kNorm));
      BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, tn::kAttnVBias), {kv_dim}, Role::kNorm));
    }
    if (config.has_sub_norms) {
      // attn_sub_norm normalizes the attention output (width q_dim, which equals n_embd in
      // every published BitNet) right before attn_output; ffn_sub_norm the gated FFN hidden.
      BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, tn::kAttnSubNorm), {q_dim}, Role::kNorm));
      BF_RETURN_IF_ERROR(Require(file, tn::Layer(layer, tn::kFfnSubNorm), {ff}, Role::kNorm));
    }
  }
  return absl::OkStatus();
}

}  // namespace bitfleet::model

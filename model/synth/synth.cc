#include "model/synth/synth.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "model/quantize/encode.h"
#include "model/quantize/type_policy.h"
#include "model/synth/presets.h"
#include "model/synth/random.h"
#include "model/synth/synth_vocab.h"

namespace bitfleet::synth {
namespace {

namespace names = model::tensor_names;
using quantize::TensorRole;

class Planner {
 public:
  explicit Planner(const SynthOptions& options)
      : options_(options), policy_{options.type, options.embedding_type} {}

  void Vector(std::string name, uint64_t size) {
    Add(std::move(name), {size}, TensorRole::kVector, WeightKind::kNorm, 0.0);
  }

  // A projection's bias (Qwen2's Q/K/V): F32 like the norms, Gaussian values large enough that
  // a forward pass that dropped them would show.
  void Bias(std::string name, uint64_t size) {
    Add(std::move(name), {size}, TensorRole::kVector, WeightKind::kGaussian, 0.5);
  }

  // A matrix of `rows` rows of `row_elems` (fan-in) elements. `residual` projections add into
  // the residual stream and are scaled down by sqrt(2 n_layer), as in GPT-2.
  void Matrix(std::string name, uint64_t row_elems, uint64_t rows, bool residual) {
    double stddev = 1.0 / std::sqrt(static_cast<double>(row_elems));
    if (residual) stddev /= std::sqrt(2.0 * options_.config.n_layer);
    const bool ternary = options_.config.arch == model::Arch::kBitnet;
    Add(std::move(name), {row_elems, rows}, TensorRole::kMatrix,
        ternary ? WeightKind::kTernary : WeightKind::kGaussian, stddev);
  }

  void Embedding(std::string name, TensorRole role) {
    const model::ModelConfig& c = options_.config;
    Add(std::move(name), {c.n_embd, c.n_vocab}, role, WeightKind::kGaussian,
        2.0 / std::sqrt(static_cast<double>(c.n_embd)));
  }

  std::vector<SynthTensor> Take() { return std::move(tensors_); }

 private:
  void Add(std::string name, std::vector<uint64_t> shape, TensorRole role, WeightKind kind, double stddev) {
    SynthTensor t;
    const quantize::TypeChoice choice = quantize::ChooseType(policy_, role, shape[0]);
    t.type = choice.type;
    t.fallback_reason = choice.fallback_reason;
    t.weights.kind = kind;
    t.weights.key = StreamKey(options_.seed, name);
    if (kind == WeightKind::kGaussian) t.weights.stddev = static_cast<float>(stddev);
    if (kind == WeightKind::kTernary) t.weights.scale = TernaryScale(stddev, StreamKey(options_.seed, name + "#scale"));
    t.name = std::move(name);
    t.shape = std::move(shape);
    tensors_.push_back(std::move(t));
  }

  const SynthOptions& options_;
  quantize::TypePolicy policy_;
  std::vector<SynthTensor> tensors_;
};

}  // namespace

StatusOr<std::vector<SynthTensor>> PlanSynthTensors(const SynthOptions& options) {
  const model::ModelConfig& c = options.config;
  BF_RETURN_IF_ERROR(CheckSynthConfig(c));
  const uint64_t q_dim = uint64_t{c.n_head} * c.head_dim;
  const uint64_t kv_dim = uint64_t{c.n_head_kv} * c.head_dim;

  Planner plan(options);
  plan.Embedding(names::kTokenEmbd, TensorRole::kEmbedding);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    auto layer = [l](const char* suffix) { return names::Layer(l, suffix); };
    plan.Vector(layer("attn_norm.weight"), c.n_embd);
    plan.Matrix(layer("attn_q.weight"), c.n_embd, q_dim, false);
    plan.Matrix(layer("attn_k.weight"), c.n_embd, kv_dim, false);
    plan.Matrix(layer("attn_v.weight"), c.n_embd, kv_dim, false);
    if (c.qkv_bias) {
      plan.Bias(layer(names::kAttnQBias), q_dim);
      plan.Bias(layer(names::kAttnKBias), kv_dim);
      plan.Bias(layer(names::kAttnVBias), kv_dim);
    }
    if (c.has_sub_norms) plan.Vector(layer("attn_sub_norm.weight"), q_dim);
    plan.Matrix(layer("attn_output.weight"), q_dim, c.n_embd, true);
    plan.Vector(layer("ffn_norm.weight"), c.n_embd);
    plan.Matrix(layer("ffn_gate.weight"), c.n_embd, c.n_ff, false);
    plan.Matrix(layer("ffn_up.weight"), c.n_embd, c.n_ff, false);
    if (c.has_sub_norms) plan.Vector(layer("ffn_sub_norm.weight"), c.n_ff);
    plan.Matrix(layer("ffn_down.weight"), c.n_ff, c.n_embd, true);
  }
  plan.Vector(names::kOutputNorm, c.n_embd);
  if (!c.tied_embeddings) plan.Embedding(names::kOutput, TensorRole::kOutput);
  return plan.Take();
}

StatusOr<gguf::GgufWriter> BuildSynthWriter(const SynthOptions& options) {
  BF_ASSIGN_OR_RETURN(std::vector<SynthTensor> tensors, PlanSynthTensors(options));
  BF_ASSIGN_OR_RETURN(SynthVocab vocab, BuildSynthVocab(options.config.n_vocab));

  gguf::GgufWriter writer;
  model::WriteModelConfig(options.config, writer);
  writer.SetU32("general.file_type", quantize::FileTypeFor(options.type));
  writer.SetU32("general.quantization_version", 2);
  writer.Set("bitfleet.synth.seed", gguf::Value::U64(options.seed));
  if (!options.preset.empty()) writer.SetString("bitfleet.synth.preset", options.preset);
  WriteTokenizer(vocab, writer);

  // Gaussian weights asked to be ternary go through absmean, like `bitfleet quantize`.
  auto log = Logger("synth");
  for (SynthTensor& t : tensors) {
    if (!t.fallback_reason.empty()) {
      log->warn("{}: {}; writing {} instead", t.name, t.fallback_reason, DTypeName(t.type));
    }
    const uint64_t row_elems = t.shape[0];
    const uint64_t rows = t.shape.size() > 1 ? t.shape[1] : 1;
    gguf::GgufWriter::Filler filler = [spec = t.weights, type = t.type, row_elems, rows](std::span<uint8_t> out) {
      quantize::RowSource source = [&spec, row_elems](uint64_t first_row, std::span<float> values) {
        GenerateWeights(spec, first_row * row_elems, values);
        return absl::OkStatus();
      };
      return quantize::EncodeTensor(type, row_elems, rows, source, out, nullptr);
    };
    BF_RETURN_IF_ERROR(writer.AddTensor(t.name, t.type, t.shape, std::move(filler)));
  }
  return writer;
}

StatusOr<SynthSummary> SynthesizeModel(const SynthOptions& options, const std::string& path,
                                       const std::function<void(size_t, size_t)>& progress) {
  auto log = Logger("synth");
  BF_ASSIGN_OR_RETURN(std::vector<SynthTensor> tensors, PlanSynthTensors(options));
  BF_ASSIGN_OR_RETURN(gguf::GgufWriter writer, BuildSynthWriter(options));
  if (options.config.arch == model::Arch::kLlama && IsTernary(options.type)) {
    log->info("llama weights are drawn Gaussian; {} matrices are absmean-ternarized from them",
              DTypeName(options.type));
  }
  const model::ModelConfig& c = options.config;
  log->info("writing {} ({} {}, n_embd {}, n_layer {}, n_head {}/{} kv, n_ff {}, n_vocab {}, {} matrices, seed {})",
            path, c.arch_name, options.preset.empty() ? "custom" : options.preset, c.n_embd, c.n_layer, c.n_head,
            c.n_head_kv, c.n_ff, c.n_vocab, DTypeName(options.type), options.seed);
  BF_RETURN_IF_ERROR(writer.WriteFile(path, progress));

  SynthSummary summary;
  summary.tensors = tensors.size();
  for (const SynthTensor& t : tensors) {
    uint64_t elems = 1;
    for (uint64_t d : t.shape) elems *= d;
    summary.parameters += elems;
    if (!t.fallback_reason.empty()) ++summary.fallbacks;
  }
  std::error_code ec;
  summary.file_bytes = std::filesystem::file_size(path, ec);
  log->info("wrote {}: {} tensors, {} parameters, {:.1f} MiB{}", path, summary.tensors, summary.parameters,
            summary.file_bytes / 1048576.0,
            summary.fallbacks > 0 ? absl::StrCat(" (", summary.fallbacks, " tensors fell back to ",
                                                 DTypeName(quantize::kFallbackType), ")")
                                  : std::string());
  return summary;
}

}  // namespace bitfleet::synth

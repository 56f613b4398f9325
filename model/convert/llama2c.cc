#include "model/convert/llama2c.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/fp16.h"
#include "core/logging.h"
#include "core/mapped_file.h"
#include "model/convert/llama2c_tokenizer.h"

namespace bitfleet::convert {
namespace {

// Magic of llama2.c's versioned exports ("ak42" as a little-endian uint32).
constexpr uint32_t kVersionedMagic = 0x616b3432;
// llama2.c's run.c hard-codes both; the checkpoint does not store them.
constexpr float kRmsEps = 1e-5f;
constexpr float kRopeFreqBase = 10000.0f;
// general.file_type values (llama.cpp's llama_ftype).
constexpr uint32_t kFileTypeAllF32 = 0;
constexpr uint32_t kFileTypeMostlyF16 = 1;

Status Error(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("llama2.c checkpoint: ", message));
}

Status CheckField(const char* field, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return Error(absl::StrCat(field, " = ", value, " is outside [", lo, ", ", hi, "]"));
}

Status ValidateHeader(const Llama2cHeader& h) {
  namespace lim = model::limits;
  BF_RETURN_IF_ERROR(CheckField("dim", h.dim, 1, lim::kMaxEmbd));
  BF_RETURN_IF_ERROR(CheckField("hidden_dim", h.hidden_dim, 1, lim::kMaxFeedForward));
  BF_RETURN_IF_ERROR(CheckField("n_layers", h.n_layers, 1, lim::kMaxLayers));
  BF_RETURN_IF_ERROR(CheckField("n_heads", h.n_heads, 1, lim::kMaxHeads));
  BF_RETURN_IF_ERROR(CheckField("n_kv_heads", h.n_kv_heads, 1, h.n_heads));
  // int64 so that vocab_size = INT32_MIN cannot overflow the negation.
  BF_RETURN_IF_ERROR(CheckField("|vocab_size|", std::abs(int64_t{h.vocab_size}), 1, lim::kMaxVocab));
  BF_RETURN_IF_ERROR(CheckField("seq_len", h.seq_len, 1, lim::kMaxContext));
  if (h.dim % h.n_heads != 0) {
    return Error(absl::StrCat("n_heads = ", h.n_heads, " does not divide dim = ", h.dim));
  }
  if (h.n_heads % h.n_kv_heads != 0) {
    return Error(absl::StrCat("n_kv_heads = ", h.n_kv_heads, " does not divide n_heads = ", h.n_heads));
  }
  if ((h.dim / h.n_heads) % 2 != 0) {
    return Error(absl::StrCat("head size ", h.dim / h.n_heads, " is odd; RoPE rotates pairs"));
  }
  return absl::OkStatus();
}

// Copies float32 source data into a tensor of `type` (F32 as is, F16 rounded to nearest even).
gguf::GgufWriter::Filler CopyFloats(std::span<const uint8_t> source, DType type, std::string name) {
  return [source, type, name = std::move(name)](std::span<uint8_t> out) -> Status {
    const size_t count = source.size() / sizeof(float);
    const size_t out_elem = type == DType::kF32 ? sizeof(float) : sizeof(uint16_t);
    if (out.size() != count * out_elem) {
      return absl::InternalError(absl::StrCat("tensor ", name, ": writer asked for ", out.size(),
                                              " bytes, source has ", count, " floats"));
    }
    if (type == DType::kF32) {
      std::memcpy(out.data(), source.data(), source.size());
      return absl::OkStatus();
    }
    for (size_t i = 0; i < count; ++i) {
      float value;
      std::memcpy(&value, source.data() + i * sizeof(float), sizeof(float));
      const uint16_t half = FloatToHalf(value);
      std::memcpy(out.data() + i * sizeof(uint16_t), &half, sizeof(half));
    }
    return absl::OkStatus();
  };
}

}  // namespace

StatusOr<Llama2cLayout> ParseLlama2cCheckpoint(std::span<const uint8_t> bytes) {
  if (bytes.size() < kLlama2cHeaderBytes) {
    return Error(absl::StrCat("file of ", bytes.size(), " bytes is shorter than the ",
                              kLlama2cHeaderBytes, "-byte header"));
  }
  uint32_t magic;
  std::memcpy(&magic, bytes.data(), sizeof(magic));
  if (magic == kVersionedMagic) {
    int32_t version;
    std::memcpy(&version, bytes.data() + 4, sizeof(version));
    return Error(absl::StrCat("this is a versioned llama2.c export (magic \"ak42\", version ", version,
                              "); only the version 0 (legacy) layout is supported: re-export with "
                              "export.py --version 0"));
  }

  Llama2cLayout layout;
  Llama2cHeader& h = layout.header;
  int32_t fields[7];
  std::memcpy(fields, bytes.data(), sizeof(fields));
  h = {fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6]};
  BF_RETURN_IF_ERROR(ValidateHeader(h));

  layout.n_vocab = static_cast<uint32_t>(std::abs(int64_t{h.vocab_size}));
  layout.shared_classifier = h.vocab_size > 0;
  layout.head_size = static_cast<uint32_t>(h.dim / h.n_heads);
  layout.kv_dim = static_cast<uint32_t>(h.dim / h.n_heads * h.n_kv_heads);

  // The caps above bound every product below 2^52 bytes, so plain uint64 arithmetic is exact.
  const uint64_t f = sizeof(float);
  const uint64_t dim = static_cast<uint64_t>(h.dim);
  const uint64_t hidden = static_cast<uint64_t>(h.hidden_dim);
  const uint64_t layers = static_cast<uint64_t>(h.n_layers);
  const uint64_t kv_dim = layout.kv_dim;
  uint64_t at = kLlama2cHeaderBytes;
  auto take = [&](uint64_t floats) {
    const uint64_t offset = at;
    at += floats * f;
    return offset;
  };
  layout.token_embedding = take(layout.n_vocab * dim);
  layout.rms_att = take(layers * dim);
  layout.wq = take(layers * dim * dim);
  layout.wk = take(layers * kv_dim * dim);
  layout.wv = take(layers * kv_dim * dim);
  layout.wo = take(layers * dim * dim);
  layout.rms_ffn = take(layers * dim);
  layout.w1 = take(layers * hidden * dim);
  layout.w2 = take(layers * dim * hidden);
  layout.w3 = take(layers * hidden * dim);
  layout.rms_final = take(dim);
  layout.freq_cis = take(static_cast<uint64_t>(h.seq_len) * layout.head_size);  // real + imag
  if (!layout.shared_classifier) layout.wcls = take(layout.n_vocab * dim);
  layout.file_bytes = at;

  if (bytes.size() != layout.file_bytes) {
    const char* what = bytes.size() < layout.file_bytes
                           ? "truncated"
                           : "longer than the header implies (trailing data, or not a version 0 checkpoint)";
    return Error(absl::StrCat("file is ", what, ": ", bytes.size(), " bytes, the header (dim ", h.dim,
                              ", hidden_dim ", h.hidden_dim, ", n_layers ", h.n_layers, ", n_heads ",
                              h.n_heads, ", n_kv_heads ", h.n_kv_heads, ", vocab_size ", h.vocab_size,
                              ", seq_len ", h.seq_len, ") implies ", layout.file_bytes));
  }
  return layout;
}

model::ModelConfig Llama2cModelConfig(const Llama2cLayout& layout, const std::string& name) {
  const Llama2cHeader& h = layout.header;
  model::ModelConfig config;
  config.arch = model::Arch::kLlama;
  config.arch_name = "llama";
  config.name = name;
  config.n_vocab = layout.n_vocab;
  config.n_embd = static_cast<uint32_t>(h.dim);
  config.n_layer = static_cast<uint32_t>(h.n_layers);
  config.n_head = static_cast<uint32_t>(h.n_heads);
  config.n_head_kv = static_cast<uint32_t>(h.n_kv_heads);
  config.n_ff = static_cast<uint32_t>(h.hidden_dim);
  config.n_ctx_train = static_cast<uint32_t>(h.seq_len);
  config.head_dim = layout.head_size;
  config.rope_dim = layout.head_size;
  config.rope_freq_base = kRopeFreqBase;
  config.rope_type = model::RopeType::kNorm;
  config.rms_eps = kRmsEps;
  config.activation = model::Activation::kSilu;
  config.tied_embeddings = layout.shared_classifier;
  config.has_sub_norms = false;
  return config;
}

StatusOr<model::ModelConfig> AddLlama2cModel(std::span<const uint8_t> checkpoint,
                                             std::span<const uint8_t> tokenizer,
                                             const Llama2cOptions& options, gguf::GgufWriter& writer) {
  if (options.weight_type != DType::kF32 && options.weight_type != DType::kF16) {
    return absl::InvalidArgumentError(absl::StrCat("llama2.c conversion writes f32 or f16 weights, not ",
                                                   DTypeName(options.weight_type),
                                                   "; quantize the result with `bitfleet quantize`"));
  }
  BF_ASSIGN_OR_RETURN(Llama2cLayout layout, ParseLlama2cCheckpoint(checkpoint));
  BF_ASSIGN_OR_RETURN(SentencePieceVocab vocab, ReadLlama2cTokenizer(tokenizer, layout.n_vocab));
  model::ModelConfig config = Llama2cModelConfig(layout, options.name);
  BF_RETURN_IF_ERROR(model::ValidateModelConfig(config));

  model::WriteModelConfig(config, writer);
  writer.SetU32("general.file_type",
                options.weight_type == DType::kF32 ? kFileTypeAllF32 : kFileTypeMostlyF16);
  WriteLlamaTokenizer(vocab, writer);

  // `rows` x `row_len` floats at `offset`: ggml shape [row_len, rows] (or [row_len] for 1-D).
  auto add = [&](const std::string& name, uint64_t offset, uint64_t row_len, uint64_t rows) -> Status {
    const bool matrix = rows > 1;
    const DType type = matrix ? options.weight_type : DType::kF32;
    std::vector<uint64_t> shape = matrix ? std::vector<uint64_t>{row_len, rows} : std::vector<uint64_t>{row_len};
    std::span<const uint8_t> source = checkpoint.subspan(offset, row_len * rows * sizeof(float));
    return writer.AddTensor(name, type, std::move(shape), CopyFloats(source, type, name));
  };
  namespace tn = model::tensor_names;
  const uint64_t dim = config.n_embd;
  const uint64_t hidden = config.n_ff;
  const uint64_t kv_dim = layout.kv_dim;
  const uint64_t f = sizeof(float);
  BF_RETURN_IF_ERROR(add(tn::kTokenEmbd, layout.token_embedding, dim, config.n_vocab));
  BF_RETURN_IF_ERROR(add(tn::kOutputNorm, layout.rms_final, dim, 1));
  if (!layout.shared_classifier) BF_RETURN_IF_ERROR(add(tn::kOutput, layout.wcls, dim, config.n_vocab));
  for (uint32_t l = 0; l < config.n_layer; ++l) {
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kAttnNorm), layout.rms_att + l * dim * f, dim, 1));
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kAttnQ), layout.wq + l * dim * dim * f, dim, dim));
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kAttnK), layout.wk + l * kv_dim * dim * f, dim, kv_dim));
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kAttnV), layout.wv + l * kv_dim * dim * f, dim, kv_dim));
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kAttnOutput), layout.wo + l * dim * dim * f, dim, dim));
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kFfnNorm), layout.rms_ffn + l * dim * f, dim, 1));
    // llama2.c: w1 = gate, w3 = up, w2 = down (out = w2(silu(w1 x) * w3 x)).
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kFfnGate), layout.w1 + l * hidden * dim * f, dim, hidden));
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kFfnUp), layout.w3 + l * hidden * dim * f, dim, hidden));
    BF_RETURN_IF_ERROR(add(tn::Layer(l, tn::kFfnDown), layout.w2 + l * dim * hidden * f, hidden, dim));
  }
  return config;
}

Status ConvertLlama2cFile(const std::string& checkpoint_path, const std::string& tokenizer_path,
                          const std::string& output_path, Llama2cOptions options,
                          const std::function<void(size_t, size_t)>& progress) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> checkpoint, MappedFile::Open(checkpoint_path));
  BF_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> tokenizer, MappedFile::Open(tokenizer_path));
  if (options.name.empty()) options.name = std::filesystem::path(checkpoint_path).stem().string();

  gguf::GgufWriter writer;
  StatusOr<model::ModelConfig> config = AddLlama2cModel(checkpoint->bytes(), tokenizer->bytes(), options, writer);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(checkpoint_path, ": ", std::string(config.status().message())));
  }
  Logger("convert")->info("{}: llama, {} layers, dim {}, {} heads ({} KV), ffn {}, vocab {}{}, {}",
                          checkpoint_path, config->n_layer, config->n_embd, config->n_head,
                          config->n_head_kv, config->n_ff, config->n_vocab,
                          config->tied_embeddings ? " (tied)" : "", DTypeName(options.weight_type));
  BF_RETURN_IF_ERROR(writer.WriteFile(output_path, progress));

  // Read the result back as a loader would, so a converter bug never ships a bad file.
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> written, gguf::GgufFile::Open(output_path));
  BF_ASSIGN_OR_RETURN(model::ModelConfig reread, model::ReadModelConfig(*written));
  BF_RETURN_IF_ERROR(model::ValidateTensors(reread, *written));
  return absl::OkStatus();
}

}  // namespace bitfleet::convert

#include "model/quantize/quantize_model.h"

#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/fp16.h"
#include "core/logging.h"
#include "kernels/ref/quant.h"
#include "model/quantize/encode.h"

namespace bitfleet::quantize {
namespace {


// Float rows of an input tensor, straight from the mapping, row range by row range. Types
// with a per-tensor tail (I2_S keeps its scale there) are decoded whole into `decoded` first.
// The source is thread-safe: it only reads.
StatusOr<RowSource> MakeRowSource(const gguf::TensorInfo& tensor, std::span<const uint8_t> bytes,
                                  std::vector<float>& decoded) {
  const uint64_t row_elems = tensor.shape[0];
  if (Info(tensor.type).tensor_tail_bytes != 0) {
    decoded.resize(tensor.elements());
    BF_RETURN_IF_ERROR(kernels::ref::DequantizeTensor(tensor.type, bytes, row_elems, decoded));
    return RowSource([&decoded, row_elems](uint64_t first_row, std::span<float> out) -> Status {
      std::memcpy(out.data(), decoded.data() + first_row * row_elems, out.size() * sizeof(float));
      return absl::OkStatus();
    });
  }
  BF_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(tensor.type, row_elems));
  return RowSource([type = tensor.type, row_elems, row_bytes, bytes](uint64_t first_row, std::span<float> out) {
    const uint64_t rows = out.size() / row_elems;
    return kernels::ref::DequantizeRow(type, bytes.subspan(first_row * row_bytes, rows * row_bytes), out);
  });
}

// Absmean on a model not trained ternary ruins it; say so loudly, once per run.
void WarnAbsmean(const std::string& name, bool& warned) {
  auto log = Logger("quantize");
  if (!warned) {
    log->warn(
        "{} is not ternary (its values are not {{-s, 0, +s}} for one scale s): ternarizing with absmean. A model "
        "that was not trained ternary (BitNet b1.58 style) loses its quality completely; expect garbage output",
        name);
    warned = true;
  } else {
    log->debug("{}: absmean-ternarized", name);
  }
}

}  // namespace

StatusOr<gguf::GgufWriter> BuildQuantizeWriter(const gguf::GgufFile& input, const QuantizeOptions& options,
                                               QuantizeSummary* summary) {
  auto log = Logger("quantize");
  gguf::GgufWriter writer;
  for (const gguf::KeyValue& kv : input.metadata()) writer.Set(kv.key, kv.value);
  writer.SetU32("general.file_type", FileTypeFor(options.type));
  writer.SetU32("general.quantization_version", 2);

  const TypePolicy policy{options.type, options.embedding_type};
  const auto& tensors = input.tensors();
  if (summary != nullptr) {
    *summary = QuantizeSummary{};
    summary->tensors.resize(tensors.size());
  }
  // Shared by the fillers, which run one after another inside WriteFile.
  auto warned = std::make_shared<bool>(false);

  for (size_t i = 0; i < tensors.size(); ++i) {
    const gguf::TensorInfo& tensor = tensors[i];
    const std::span<const uint8_t> bytes = input.TensorData(tensor);
    const TensorRole role = ClassifyTensor(tensor.name, tensor.shape.size());
    const uint64_t row_elems = tensor.shape.empty() ? 1 : tensor.shape[0];

    TypeChoice choice = ChooseType(policy, role, row_elems);
    bool copy = role == TensorRole::kOther || !kernels::ref::HasReferenceCodec(tensor.type);
    if (options.keep_embeddings && (role == TensorRole::kEmbedding || role == TensorRole::kOutput)) copy = true;
    if (copy) choice = {tensor.type, ""};
    if (choice.type == tensor.type) copy = true;
    if (!choice.fallback_reason.empty()) {
      log->warn("{}: {}; writing {} instead", tensor.name, choice.fallback_reason, DTypeName(choice.type));
    }

    TensorOutcome outcome{tensor.name, tensor.type, choice.type, choice.fallback_reason, copy, false};
    if (summary != nullptr) {
      summary->bytes_in += tensor.size_bytes;
      BF_ASSIGN_OR_RETURN(uint64_t out_bytes, TensorBytes(choice.type, row_elems, tensor.elements()));
      summary->bytes_out += out_bytes;
      if (!choice.fallback_reason.empty()) ++summary->fallbacks;
      summary->tensors[i] = outcome;
    }

    gguf::GgufWriter::Filler filler;
    if (copy) {
      filler = [bytes](std::span<uint8_t> out) -> Status {
        if (out.size() != bytes.size()) return absl::InternalError("tensor size changed while copying");
        std::memcpy(out.data(), bytes.data(), bytes.size());
        return absl::OkStatus();
      };
    } else {
      filler = [&tensor, bytes, type = choice.type, row_elems, summary, i, warned](std::span<uint8_t> out) -> Status {
        EncodeResult result;
        std::vector<float> decoded;
        StatusOr<RowSource> source = MakeRowSource(tensor, bytes, decoded);
        const Status status = source.ok() ? EncodeTensor(type, row_elems, tensor.rows(), *source, out, &result)
                                          : source.status();
        if (!status.ok()) {
          return absl::Status(status.code(), absl::StrCat(tensor.name, ": ", std::string(status.message())));
        }
        if (IsTernary(type) && !result.absmean_ternarized && Info(type).tensor_tail_bytes == 0 &&
            HalfToFloat(FloatToHalf(result.ternary_scale)) != result.ternary_scale) {
          Logger("quantize")->info("{}: ternary scale {} is not an fp16 value; {} blocks store it as {}", tensor.name,
                                   result.ternary_scale, DTypeName(type),
                                   HalfToFloat(FloatToHalf(result.ternary_scale)));
        }
        if (result.absmean_ternarized) {
          WarnAbsmean(tensor.name, *warned);
          if (summary != nullptr) {
            summary->tensors[i].absmean_ternarized = true;
            ++summary->absmean_ternarized;
          }
        }
        return absl::OkStatus();
      };
    }
    BF_RETURN_IF_ERROR(writer.AddTensor(tensor.name, choice.type, tensor.shape, std::move(filler)));
  }
  return writer;
}

StatusOr<QuantizeSummary> QuantizeModel(const std::string& in_path, const std::string& out_path,
                                        const QuantizeOptions& options,
                                        const std::function<void(size_t, size_t)>& progress) {
  auto log = Logger("quantize");
  std::error_code ec;
  if (in_path == out_path || std::filesystem::equivalent(in_path, out_path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("output '", out_path, "' is the input file; write a new file"));
  }
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> input, gguf::GgufFile::Open(in_path));
  QuantizeSummary summary;
  BF_ASSIGN_OR_RETURN(gguf::GgufWriter writer, BuildQuantizeWriter(*input, options, &summary));
  BF_RETURN_IF_ERROR(writer.WriteFile(out_path, progress));

  for (const TensorOutcome& t : summary.tensors) {
    log->debug("{}: {} -> {}{}", t.name, DTypeName(t.from), DTypeName(t.to),
               t.copied ? " (copied)" : (t.absmean_ternarized ? " (absmean ternarized)" : ""));
  }
  if (summary.absmean_ternarized > 0) {
    log->warn("{} of {} tensors were not ternary and were absmean-ternarized: the output is for testing kernels and "
              "throughput, not for quality",
              summary.absmean_ternarized, summary.tensors.size());
  }
  log->info("wrote {}: {} tensors as {} ({} fallbacks), tensor data {:.1f} MiB -> {:.1f} MiB", out_path,
            summary.tensors.size(), DTypeName(options.type), summary.fallbacks, summary.bytes_in / 1048576.0,
            summary.bytes_out / 1048576.0);
  return summary;
}

}  // namespace bitfleet::quantize

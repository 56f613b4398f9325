// `bitfleet quantize`: rewrites a GGUF model with its weight matrices in another type.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/gguf/gguf.h"
#include "model/quantize/type_policy.h"

namespace bitfleet::quantize {

struct QuantizeOptions {
  DType type = DType::kQ8_0;
  // token_embd / output: unset follows the policy (type, or F16 for ternary types).
  std::optional<DType> embedding_type;
  // Keep token_embd / output in their input type (wins over embedding_type).
  bool keep_embeddings = false;
};

// What happened to one tensor. Filled while the output is written.
struct TensorOutcome {
  std::string name;
  DType from = DType::kF32;
  DType to = DType::kF32;
  std::string fallback_reason;  // non-empty: `to` is a fallback (type_policy.h)
  bool copied = false;          // bytes copied unchanged (same type, or rank >= 3)
  bool absmean_ternarized = false;
};

struct QuantizeSummary {
  std::vector<TensorOutcome> tensors;  // in file order
  uint64_t bytes_in = 0;               // tensor data, input
  uint64_t bytes_out = 0;              // tensor data, output
  size_t absmean_ternarized = 0;       // matrices that were not ternary before
  size_t fallbacks = 0;
};

// Builds the writer for the converted model: every metadata key of `input` (general.file_type
// set from `options.type`, general.quantization_version 2 when quantized), and every tensor in
// input order with a filler that converts it when the file is written. `summary`, when set, is
// sized now and completed by the fillers; it and `input` must outlive the writer's WriteFile.
// Fails up front on tensors of types that cannot be decoded.
StatusOr<gguf::GgufWriter> BuildQuantizeWriter(const gguf::GgufFile& input, const QuantizeOptions& options,
                                               QuantizeSummary* summary);

// Converts the model at `in_path` into `out_path` (written through a temporary file and renamed,
// so a failure leaves no partial output). Logs every fallback and absmean ternarization;
// `progress` receives (tensors done, total).
StatusOr<QuantizeSummary> QuantizeModel(const std::string& in_path, const std::string& out_path,
                                        const QuantizeOptions& options,
                                        const std::function<void(size_t, size_t)>& progress = nullptr);

}  // namespace bitfleet::quantize

#include "worker/model_weights.h"

#include <cmath>

#include "kernels/ref/quant.h"

namespace bitfleet::worker {
namespace {

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

StatusOr<const gguf::TensorInfo*> FindWithShape(const gguf::GgufFile& file, const std::string& name,
                                                const std::vector<uint64_t>& shape) {
  const gguf::TensorInfo* info = file.FindTensor(name);
  if (info == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name));
  if (info->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", ShapeString(info->shape),
                                                   ", expected ", ShapeString(shape)));
  }
  return info;
}

}  // namespace

StatusOr<Projection> LoadProjection(const gguf::GgufFile& file, const std::string& name, uint64_t cols,
                                    uint64_t rows) {
  BF_ASSIGN_OR_RETURN(const gguf::TensorInfo* info, FindWithShape(file, name, {cols, rows}));
  Projection projection;
  auto packed = kernels::PackWeight(info->type, cols, rows, file.TensorData(*info));
  if (!packed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", std::string(packed.status().message())));
  }
  projection.weight = std::move(packed).value();

  constexpr std::string_view kSuffix = ".weight";
  if (name.size() > kSuffix.size() && name.ends_with(kSuffix)) {
    const std::string scale_name = name.substr(0, name.size() - kSuffix.size()) + ".scale";
    if (const gguf::TensorInfo* scale = file.FindTensor(scale_name)) {
      if (scale->elements() != 1) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", scale_name, " must hold one value"));
      }
      BF_ASSIGN_OR_RETURN(std::vector<float> value, LoadVector(file, scale_name, 1));
      if (!std::isfinite(value[0])) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", scale_name, " is not finite"));
      }
      projection.scale = value[0];
      projection.has_scale = true;
    }
  }
  return projection;
}

StatusOr<std::vector<float>> LoadVector(const gguf::GgufFile& file, const std::string& name, uint64_t n) {
  const gguf::TensorInfo* info = file.FindTensor(name);
  if (info == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name));
  if (info->elements() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " has ", info->elements(), " elements, expected ", n));
  }
  std::vector<float> out(n);
  Status status = kernels::ref::DequantizeTensor(info->type, file.TensorData(*info), info->shape[0], out);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", std::string(status.message())));
  }
  return out;
}

StatusOr<TokenEmbedding> TokenEmbedding::Load(const gguf::GgufFile& file, const std::string& name, uint64_t n_embd,
                                              uint64_t n_vocab) {
  BF_ASSIGN_OR_RETURN(const gguf::TensorInfo* info, FindWithShape(file, name, {n_embd, n_vocab}));
  TokenEmbedding table;
  table.data_ = file.TensorData(*info);
  table.type_ = info->type;
  table.n_embd_ = n_embd;
  if (info->type == DType::kI2_S) {
    // I2_S packs 4 codes per byte with one scale in the tensor tail.
    if (n_embd % 128 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": I2_S rows must be multiples of 128"));
    }
    table.row_bytes_ = n_embd / 4;
    BF_ASSIGN_OR_RETURN(table.i2s_scale_, kernels::ref::ReadI2sScale(table.data_));
  } else {
    auto row_bytes = RowBytes(info->type, n_embd);
    if (!row_bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, ": ", std::string(row_bytes.status().message())));
    }
    table.row_bytes_ = *row_bytes;
  }
  return table;
}

Status TokenEmbedding::Lookup(int32_t token, float* out) const {
  std::span<const uint8_t> row = data_.subspan(static_cast<size_t>(token) * row_bytes_, row_bytes_);
  std::span<float> dst(out, n_embd_);
  if (type_ == DType::kI2_S) return kernels::ref::DequantizeI2sCodes(row, i2s_scale_, dst);
  return kernels::ref::DequantizeRow(type_, row, dst);
}

}  // namespace bitfleet::worker

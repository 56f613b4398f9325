#include "worker/model_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

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

// The tensor behind `slice`, checked to be the tensor the plan describes.
StatusOr<const gguf::TensorInfo*> FindSliced(const gguf::GgufFile& file, const sharding::TensorSlice& slice) {
  const gguf::TensorInfo* info = file.FindTensor(slice.name);
  if (info == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", slice.name));
  const uint64_t cols = info->shape.empty() ? 0 : info->shape[0];
  const uint64_t rows = info->shape.size() < 2 ? 1 : info->rows();
  if (info->type != slice.type || cols != slice.cols || rows != slice.rows) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, " (", DTypeName(info->type), " ",
                                                   ShapeString(info->shape), ") does not match its shard plan"));
  }
  if (slice.col_range.end > cols || slice.col_range.size() == 0 || slice.row_ranges.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, ": empty or out-of-range column slice"));
  }
  for (const sharding::Range& r : slice.row_ranges) {
    if (r.end > rows || r.size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, ": empty or out-of-range row slice"));
    }
  }
  return info;
}

StatusOr<float> LoadScale(const gguf::GgufFile& file, const std::string& scale_name) {
  const gguf::TensorInfo* scale = file.FindTensor(scale_name);
  if (scale->elements() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", scale_name, " must hold one value"));
  }
  BF_ASSIGN_OR_RETURN(std::vector<float> value, LoadVector(file, scale_name, 1));
  if (!std::isfinite(value[0])) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", scale_name, " is not finite"));
  }
  return value[0];
}

}  // namespace

StatusOr<std::span<const uint8_t>> SliceBytes(const gguf::GgufFile& file, const sharding::TensorSlice& slice,
                                              std::vector<uint8_t>* storage) {
  BF_ASSIGN_OR_RETURN(const gguf::TensorInfo* info, FindSliced(file, slice));
  const std::span<const uint8_t> data = file.TensorData(*info);
  if (slice.whole()) return data;
  const auto prefix = [&](const char* what, uint64_t elems) -> StatusOr<uint64_t> {
    StatusOr<uint64_t> bytes = RowBytes(slice.type, elems);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, ": ", what, " ",
                                                     std::string(bytes.status().message())));
    }
    return *bytes;
  };
  BF_ASSIGN_OR_RETURN(const uint64_t full_row_bytes, prefix("row", slice.cols));
  BF_ASSIGN_OR_RETURN(const uint64_t col_offset, prefix("column slice start:", slice.col_range.begin));
  BF_ASSIGN_OR_RETURN(const uint64_t local_row_bytes, prefix("column slice:", slice.local_cols()));
  const uint64_t tail = Info(slice.type).tensor_tail_bytes;
  if (data.size() != slice.rows * full_row_bytes + tail) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, ": unexpected data size"));
  }
  storage->resize(slice.local_rows() * local_row_bytes + tail);
  uint8_t* out = storage->data();
  for (const sharding::Range& rows : slice.row_ranges) {
    if (local_row_bytes == full_row_bytes) {  // whole rows: one copy per run
      std::memcpy(out, data.data() + rows.begin * full_row_bytes, rows.size() * full_row_bytes);
      out += rows.size() * full_row_bytes;
      continue;
    }
    for (uint64_t r = rows.begin; r < rows.end; ++r) {
      std::memcpy(out, data.data() + r * full_row_bytes + col_offset, local_row_bytes);
      out += local_row_bytes;
    }
  }
  // I2_S: the shard keeps the tensor's scale (its codes are scaled by it).
  if (tail > 0) std::memcpy(out, data.data() + data.size() - tail, tail);
  return std::span<const uint8_t>(*storage);
}

StatusOr<Projection> LoadProjection(const gguf::GgufFile& file, const sharding::TensorSlice& slice,
                                    ThreadPool* pool) {
  std::vector<uint8_t> storage;
  BF_ASSIGN_OR_RETURN(std::span<const uint8_t> bytes, SliceBytes(file, slice, &storage));
  Projection projection;
  auto packed = kernels::PackWeight(slice.type, slice.local_cols(), slice.local_rows(), bytes, pool);
  if (!packed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", slice.name, ": ", std::string(packed.status().message())));
  }
  projection.weight = std::move(packed).value();

  BF_ASSIGN_OR_RETURN(const std::optional<float> scale, ProjectionScale(file, slice.name));
  if (scale.has_value()) {
    projection.scale = *scale;
    projection.has_scale = true;
  }
  return projection;
}

StatusOr<std::optional<float>> ProjectionScale(const gguf::GgufFile& file, const std::string& weight_name) {
  constexpr std::string_view kSuffix = ".weight";
  if (weight_name.size() <= kSuffix.size() || !weight_name.ends_with(kSuffix)) return std::optional<float>();
  const std::string scale_name = weight_name.substr(0, weight_name.size() - kSuffix.size()) + ".scale";
  if (file.FindTensor(scale_name) == nullptr) return std::optional<float>();
  BF_ASSIGN_OR_RETURN(const float scale, LoadScale(file, scale_name));
  return std::optional<float>(scale);
}

StatusOr<Projection> LoadProjection(const gguf::GgufFile& file, const std::string& name, uint64_t cols,
                                    uint64_t rows) {
  BF_ASSIGN_OR_RETURN(const gguf::TensorInfo* info, FindWithShape(file, name, {cols, rows}));
  sharding::TensorSlice whole;
  whole.name = name;
  whole.type = info->type;
  whole.cols = cols;
  whole.rows = rows;
  whole.row_ranges = {{0, rows}};
  whole.col_range = {0, cols};
  return LoadProjection(file, whole);
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

StatusOr<std::vector<float>> LoadVector(const gguf::GgufFile& file, const sharding::TensorSlice& slice) {
  BF_RETURN_IF_ERROR(FindSliced(file, slice).status());
  if (slice.rows != 1) return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, " is not a vector"));
  // Norm vectors are small: decode the whole tensor, keep the slice.
  BF_ASSIGN_OR_RETURN(std::vector<float> all, LoadVector(file, slice.name, slice.cols));
  return std::vector<float>(all.begin() + slice.col_range.begin, all.begin() + slice.col_range.end);
}

StatusOr<TokenEmbedding> TokenEmbedding::Load(const gguf::GgufFile& file, const sharding::TensorSlice& slice) {
  BF_ASSIGN_OR_RETURN(const gguf::TensorInfo* info, FindSliced(file, slice));
  if (slice.row_ranges.size() != 1 || slice.local_cols() != slice.cols) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, ": an embedding slice must be whole rows"));
  }
  const std::span<const uint8_t> all = file.TensorData(*info);
  TokenEmbedding table;
  table.type_ = info->type;
  table.n_embd_ = slice.cols;
  table.vocab_begin_ = static_cast<int64_t>(slice.row_ranges[0].begin);
  table.vocab_end_ = static_cast<int64_t>(slice.row_ranges[0].end);
  if (info->type == DType::kI2_S) {
    // I2_S packs 4 codes per byte with one scale in the tensor tail.
    if (slice.cols % 128 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", slice.name, ": I2_S rows must be multiples of 128"));
    }
    table.row_bytes_ = slice.cols / 4;
    BF_ASSIGN_OR_RETURN(table.i2s_scale_, kernels::ref::ReadI2sScale(all));
  } else {
    auto row_bytes = RowBytes(info->type, slice.cols);
    if (!row_bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", slice.name, ": ", std::string(row_bytes.status().message())));
    }
    table.row_bytes_ = *row_bytes;
  }
  const uint64_t rows = static_cast<uint64_t>(table.vocab_end_ - table.vocab_begin_);
  table.data_ = all.subspan(static_cast<size_t>(table.vocab_begin_) * table.row_bytes_, rows * table.row_bytes_);
  return table;
}

Status TokenEmbedding::Lookup(int32_t token, float* out) const {
  if (!Holds(token)) {
    std::fill_n(out, n_embd_, 0.0f);
    return absl::OkStatus();
  }
  std::span<const uint8_t> row = data_.subspan(static_cast<size_t>(token - vocab_begin_) * row_bytes_, row_bytes_);
  std::span<float> dst(out, n_embd_);
  if (type_ == DType::kI2_S) return kernels::ref::DequantizeI2sCodes(row, i2s_scale_, dst);
  return kernels::ref::DequantizeRow(type_, row, dst);
}

}  // namespace bitfleet::worker

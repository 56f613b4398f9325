#include "model/quantize/encode.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/checked_math.h"
#include "core/thread_pool.h"
#include "kernels/ref/quant.h"

namespace bitfleet::quantize {
namespace {

Status CheckOutputSize(DType type, uint64_t row_elems, uint64_t rows, size_t out_bytes) {
  auto elems = CheckedMul(row_elems, rows);
  if (!elems) return absl::InvalidArgumentError("tensor element count overflows 64 bits");
  BF_ASSIGN_OR_RETURN(uint64_t want, TensorBytes(type, row_elems, *elems));
  if (want != out_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("output holds ", out_bytes, " bytes, a ", DTypeName(type), " tensor needs ", want));
  }
  return absl::OkStatus();
}

// Calls fn(first_row, n_rows) for consecutive ranges of at most `max_rows` rows covering
// [0, rows), spread over one process-wide pool of hardware threads, and returns the first error.
// `fn` must be safe to call concurrently on disjoint ranges. When another caller holds the pool
// the ranges run on this thread: same results, no nesting.
Status ForRowRanges(uint64_t rows, uint64_t max_rows, const std::function<Status(uint64_t, uint64_t)>& fn) {
  // Created on first use and never destroyed, so no exit-time destructor races a late caller.
  static ThreadPool* const pool = new ThreadPool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  static std::mutex pool_mu;
  auto run_range = [&](uint64_t begin, uint64_t end) -> Status {
    for (uint64_t row = begin; row < end; row += max_rows) {
      BF_RETURN_IF_ERROR(fn(row, std::min(max_rows, end - row)));
    }
    return absl::OkStatus();
  };
  std::unique_lock<std::mutex> lock(pool_mu, std::try_to_lock);
  if (!lock.owns_lock()) return run_range(0, rows);
  std::mutex error_mu;
  Status first_error;
  pool->ParallelFor(static_cast<int64_t>(rows), static_cast<int64_t>(max_rows), [&](int64_t begin, int64_t end) {
    Status status = run_range(static_cast<uint64_t>(begin), static_cast<uint64_t>(end));
    std::lock_guard<std::mutex> error_lock(error_mu);
    if (!status.ok() && first_error.ok()) first_error = std::move(status);
  });
  return first_error;
}

Status EncodeTernary(DType type, uint64_t row_elems, uint64_t rows, const RowSource& source,
                     std::span<uint8_t> out, EncodeResult& result) {
  std::vector<float> values(row_elems * rows);
  const uint64_t chunk_rows = std::max<uint64_t>(1, kEncodeChunkElems / row_elems);
  BF_RETURN_IF_ERROR(ForRowRanges(rows, chunk_rows, [&](uint64_t first, uint64_t n) {
    return source(first, std::span<float>(values).subspan(first * row_elems, n * row_elems));
  }));
  std::optional<float> scale = SingleTernaryScale(values);
  if (scale.has_value()) {
    result.ternary_scale = *scale;
  } else {
    BF_ASSIGN_OR_RETURN(result.ternary_scale, kernels::ref::QuantizeTernaryAbsmean(values, values));
    result.absmean_ternarized = true;
  }
  // I2_S carries one scale per tensor (its tail): encode it whole. TQ1_0/TQ2_0 blocks stand alone.
  if (Info(type).tensor_tail_bytes != 0) return kernels::ref::QuantizeTensor(type, values, row_elems, out);
  BF_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(type, row_elems));
  return ForRowRanges(rows, chunk_rows, [&](uint64_t first, uint64_t n) {
    return kernels::ref::QuantizeRow(type, std::span<const float>(values).subspan(first * row_elems, n * row_elems),
                                     out.subspan(first * row_bytes, n * row_bytes));
  });
}

}  // namespace

Status EncodeTensor(DType type, uint64_t row_elems, uint64_t rows, const RowSource& source, std::span<uint8_t> out,
                    EncodeResult* result) {
  EncodeResult local;
  EncodeResult& res = result != nullptr ? *result : local;
  res = EncodeResult{};
  BF_RETURN_IF_ERROR(CheckOutputSize(type, row_elems, rows, out.size()));
  if (IsTernary(type)) return EncodeTernary(type, row_elems, rows, source, out, res);

  // Block-local types (no per-tensor tail): whole rows at a time.
  BF_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(type, row_elems));
  const uint64_t chunk_rows = std::max<uint64_t>(1, kEncodeChunkElems / row_elems);
  return ForRowRanges(rows, chunk_rows, [&](uint64_t first, uint64_t n) -> Status {
    std::vector<float> values(n * row_elems);
    BF_RETURN_IF_ERROR(source(first, values));
    return kernels::ref::QuantizeRow(type, values, out.subspan(first * row_bytes, n * row_bytes));
  });
}

std::optional<float> SingleTernaryScale(std::span<const float> values) {
  float scale = 0.0f;
  for (float v : values) {
    if (!std::isfinite(v)) return std::nullopt;
    const float a = std::fabs(v);
    if (a == 0.0f) continue;
    if (scale == 0.0f) {
      scale = a;
    } else if (a != scale) {
      return std::nullopt;
    }
  }
  return scale;
}

}  // namespace bitfleet::quantize

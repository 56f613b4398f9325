// Weight matrices on the GPU: GGUF bytes repacked once at load time into the runtime layout of
// kernels/cuda/weight_layout.h (quantized types) or into padded rows (F32/F16/BF16), then
// uploaded. Immutable afterwards; any stream may read it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda {

// The host image of a packed weight (what PackWeightForCuda builds and CudaWeight uploads);
// tests read it to check the layout without a GPU.
struct CudaWeightImage {
  DType type = DType::kF32;
  bool quantized = false;
  QuantFormat format = QuantFormat::kTernary;  // quantized types
  FloatFormat float_format = FloatFormat::kF32;  // float types
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t n_groups = 0;    // quantized: ceil(rows / 8)
  int64_t n_steps = 0;     // quantized: ceil(cols / StepElems)
  int64_t n_blocks = 0;    // quantized: scale blocks per row
  int64_t row_stride = 0;  // float types: elements between rows (cols rounded up to 8)
  std::vector<uint8_t> data;       // codes (quantized) or the padded rows (float types)
  std::vector<float> scales;       // ternary
  std::vector<uint16_t> half_d;    // Q4_0 / Q4_1 / Q8_0
  std::vector<uint16_t> half_m;    // Q4_1
  uint64_t stream_bytes = 0;       // bytes of the GGUF encoding

  // Bytes the kernels read per call (codes + scales): the packed stream.
  uint64_t packed_bytes() const {
    return data.size() + scales.size() * sizeof(float) + (half_d.size() + half_m.size()) * sizeof(uint16_t);
  }
};

// Repacks `rows` rows of `cols` weights given in GGUF bytes (exactly TensorBytes(type, cols,
// rows * cols), including I2_S's 32-byte tail). Errors: INVALID_ARGUMENT for a size mismatch or
// zero/oversized dims, UNIMPLEMENTED for types without a CUDA kernel (I8, I16, I32, F64).
StatusOr<CudaWeightImage> PackWeightForCuda(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes);

class CudaWeight {
 public:
  // Packs and uploads to the current device.
  static StatusOr<std::unique_ptr<CudaWeight>> Create(DType type, uint64_t cols, uint64_t rows,
                                                      std::span<const uint8_t> bytes);
  static StatusOr<std::unique_ptr<CudaWeight>> Upload(const CudaWeightImage& image);

  DType type() const { return type_; }
  bool quantized() const { return quantized_; }
  int64_t rows() const { return quantized_ ? quant_.rows : float_.rows; }
  int64_t cols() const { return quantized_ ? quant_.cols : float_.cols; }
  // Device bytes read per call (codes and scales) and bytes of the GGUF encoding.
  uint64_t bytes() const { return bytes_; }
  uint64_t stream_bytes() const { return stream_bytes_; }

  // Kernel views (device pointers); quant_view() only for quantized types, float_view() only
  // for F32/F16/BF16.
  const QuantWeightView& quant_view() const { return quant_; }
  const FloatWeightView& float_view() const { return float_; }

 private:
  CudaWeight() = default;

  DType type_ = DType::kF32;
  bool quantized_ = false;
  QuantWeightView quant_;
  FloatWeightView float_;
  uint64_t bytes_ = 0;
  uint64_t stream_bytes_ = 0;
  DeviceBuffer data_;
  DeviceBuffer scales_;
  DeviceBuffer half_d_;
  DeviceBuffer half_m_;
};

}  // namespace bitfleet::kernels::cuda

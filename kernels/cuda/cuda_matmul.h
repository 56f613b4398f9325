// Status-returning entry points of the GPU matmuls: the device counterpart of kernels/matmul.h
// (same semantics: per-token int8 activations with an explicit absmax for quantized weights,
// float activations for F32/F16/BF16). Work is queued on `stream`; nothing synchronizes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "core/status.h"
#include "kernels/cuda/cuda_weight.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/matmul_launch.h"

namespace bitfleet::kernels::cuda {

// Device scratch for per-token int8 activations, sized once for the largest shape so the
// per-step path does not allocate. One per stream that uses it.
class CudaActivations {
 public:
  static StatusOr<std::unique_ptr<CudaActivations>> Create(int max_tokens, uint64_t max_cols);

  int max_tokens() const { return max_tokens_; }
  uint64_t max_cols() const { return max_cols_; }

  // The view of the first n_tokens rows for `cols` columns (stride ActivationStride(cols)).
  // INVALID_ARGUMENT beyond the capacity.
  StatusOr<ActivationView> View(int n_tokens, uint64_t cols) const;
  int8_t* q() const { return q_.as<int8_t>(); }
  float* absmax() const { return absmax_.as<float>(); }
  int32_t* sums() const { return sums_.as<int32_t>(); }

 private:
  CudaActivations() = default;
  int max_tokens_ = 0;
  uint64_t max_cols_ = 0;
  DeviceBuffer q_;
  DeviceBuffer absmax_;
  DeviceBuffer sums_;
};

// Quantizes x (device, n_tokens × cols) into `out` with the given per-token absmax (device;
// null: each token's own max |x|) and returns the view the matmuls take.
StatusOr<ActivationView> QuantizeActivationsCuda(const float* x, int n_tokens, uint64_t cols, const float* absmax,
                                                 const CudaActivations& out, cudaStream_t stream);

// out (device, x.n_tokens × w.rows) = W x̂ for a quantized W.
Status MatMulQuantizedCuda(const CudaWeight& w, const ActivationView& x, float* out, cudaStream_t stream);

// The same from float activations (device, n_tokens × w.cols): F32/F16/BF16 weights multiply
// them directly; quantized weights quantize them into `scratch` first (each token's own absmax).
Status MatMulCuda(const CudaWeight& w, const float* x, int n_tokens, float* out, const CudaActivations* scratch,
                  cudaStream_t stream);

}  // namespace bitfleet::kernels::cuda

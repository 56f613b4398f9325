// Status-returning entry points of the GPU matmuls: the device counterpart of kernels/matmul.h
// (same semantics: quantized weights multiply int8 activations at the scaling ActScalingFor gives
// their type, per token for ternary (with an explicit absmax under tensor parallelism), per
// 32-column block for Q4_0 / Q4_1 / Q8_0; F32/F16/BF16 weights multiply float activations). Work
// is queued on `stream`; nothing synchronizes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "core/status.h"
#include "kernels/cuda/cuda_weight.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/matmul_launch.h"
#include "kernels/matmul.h"

namespace bitfleet::kernels::cuda {

// Device scratch for int8 activations (either scaling), sized once for the largest shape so the
// per-step path does not allocate. One per stream that uses it.
class CudaActivations {
 public:
  static StatusOr<std::unique_ptr<CudaActivations>> Create(int max_tokens, uint64_t max_cols);

  int max_tokens() const { return max_tokens_; }
  uint64_t max_cols() const { return max_cols_; }

  // The view of the first n_tokens rows for `cols` columns (stride ActivationStride(cols)) at
  // `scaling`. INVALID_ARGUMENT beyond the capacity.
  StatusOr<ActivationView> View(int n_tokens, uint64_t cols, ActScaling scaling) const;
  int8_t* q() const { return q_.as<int8_t>(); }
  float* absmax() const { return absmax_.as<float>(); }
  int32_t* sums() const { return sums_.as<int32_t>(); }
  float* block_steps() const { return block_steps_.as<float>(); }

 private:
  CudaActivations() = default;
  int max_tokens_ = 0;
  uint64_t max_cols_ = 0;
  DeviceBuffer q_;
  DeviceBuffer absmax_;
  DeviceBuffer sums_;
  DeviceBuffer block_steps_;
};

// Quantizes x (device, n_tokens × cols) into `out` at `scaling` (ActScalingFor of the weights it
// will multiply) and returns the view the matmuls take. Per token: with the given absmax
// (device, for example all-reduced across tensor-parallel ranks; null: each token's own max
// |x|). Per block: absmax must be null (INVALID_ARGUMENT otherwise): a K-split falls on block
// boundaries, so blocks need no all-reduce.
StatusOr<ActivationView> QuantizeActivationsCuda(const float* x, int n_tokens, uint64_t cols, ActScaling scaling,
                                                 const float* absmax, const CudaActivations& out,
                                                 cudaStream_t stream);

// out (device, x.n_tokens × w.rows) = W x̂ for a quantized W. INVALID_ARGUMENT for float W, a
// column mismatch, or per-block activations with a ternary W (its kernels take one step per
// token); Q4/Q8 W take either scaling.
Status MatMulQuantizedCuda(const CudaWeight& w, const ActivationView& x, float* out, cudaStream_t stream);

// The same from float activations (device, n_tokens × w.cols): F32/F16/BF16 weights multiply
// them directly; quantized weights quantize them into `scratch` first, at ActScalingFor(w.type())
// (per token: each token's own absmax).
Status MatMulCuda(const CudaWeight& w, const float* x, int n_tokens, float* out, const CudaActivations* scratch,
                  cudaStream_t stream);

}  // namespace bitfleet::kernels::cuda

#include "kernels/cuda/cuda_matmul.h"

#include "kernels/cuda/cuda_status.h"

namespace bitfleet::kernels::cuda {

cudaError_t LaunchQuantMatMul(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream) {
  if (x.n_tokens <= kMatVecMaxTokens) return LaunchQuantMatVec(w, x, out, stream);
  return LaunchQuantMatMulMma(w, x, out, stream);
}

StatusOr<std::unique_ptr<CudaActivations>> CudaActivations::Create(int max_tokens, uint64_t max_cols) {
  if (max_tokens <= 0 || max_cols == 0 || max_cols > (uint64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat("activation scratch of ", max_tokens, " x ", max_cols));
  }
  auto a = std::unique_ptr<CudaActivations>(new CudaActivations());
  a->max_tokens_ = max_tokens;
  a->max_cols_ = max_cols;
  const uint64_t stride = static_cast<uint64_t>(ActivationStride(static_cast<int64_t>(max_cols)));
  BF_ASSIGN_OR_RETURN(a->q_, DeviceBuffer::Allocate(static_cast<uint64_t>(max_tokens) * stride));
  BF_ASSIGN_OR_RETURN(a->absmax_, DeviceBuffer::Allocate(static_cast<uint64_t>(max_tokens) * sizeof(float)));
  BF_ASSIGN_OR_RETURN(a->sums_, DeviceBuffer::Allocate(static_cast<uint64_t>(max_tokens) * (stride / 32) * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(a->block_steps_,
                      DeviceBuffer::Allocate(static_cast<uint64_t>(max_tokens) * (stride / 32) * sizeof(float)));
  return a;
}

StatusOr<ActivationView> CudaActivations::View(int n_tokens, uint64_t cols, ActScaling scaling) const {
  if (n_tokens < 0 || n_tokens > max_tokens_ || cols == 0 || cols > max_cols_) {
    return absl::InvalidArgumentError(absl::StrCat("activations of ", n_tokens, " x ", cols, " exceed the scratch of ",
                                                   max_tokens_, " x ", max_cols_));
  }
  ActivationView v;
  v.q = q();
  v.absmax = absmax();
  v.sums = sums();
  v.block_steps = block_steps();
  v.cols = static_cast<int64_t>(cols);
  v.stride = ActivationStride(v.cols);
  v.n_tokens = n_tokens;
  v.per_block = scaling == ActScaling::kPerBlock;
  return v;
}

StatusOr<ActivationView> QuantizeActivationsCuda(const float* x, int n_tokens, uint64_t cols, ActScaling scaling,
                                                 const float* absmax, const CudaActivations& out,
                                                 cudaStream_t stream) {
  BF_ASSIGN_OR_RETURN(const ActivationView v, out.View(n_tokens, cols, scaling));
  if (scaling == ActScaling::kPerBlock) {
    if (absmax != nullptr) return absl::InvalidArgumentError("per-block activations take no absmax");
    BF_RETURN_IF_ERROR(CudaStatus(LaunchQuantizeActivationBlocks(x, n_tokens, v.cols, v.stride, out.q(),
                                                                 out.absmax(), out.sums(), out.block_steps(), stream),
                                  "quantize activation blocks"));
  } else {
    BF_RETURN_IF_ERROR(CudaStatus(LaunchQuantizeActivations(x, n_tokens, v.cols, absmax, v.stride, out.q(),
                                                            out.absmax(), out.sums(), out.block_steps(), stream),
                                  "quantize activations"));
  }
  return v;
}

Status MatMulQuantizedCuda(const CudaWeight& w, const ActivationView& x, float* out, cudaStream_t stream) {
  if (!w.quantized()) {
    return absl::InvalidArgumentError(absl::StrCat(DTypeName(w.type()), " weights take float activations"));
  }
  if (x.cols != w.cols()) {
    return absl::InvalidArgumentError(absl::StrCat("activations have ", x.cols, " columns, weight ", w.cols()));
  }
  if (!ActivationsFit(w.quant_view().format, x)) {
    const char* need = w.quant_view().format == QuantFormat::kTernary ? "per-token activations with absmax"
                                                                      : "activations with block steps";
    return absl::InvalidArgumentError(absl::StrCat(DTypeName(w.type()), " weights take ", need));
  }
  return CudaStatus(LaunchQuantMatMul(w.quant_view(), x, out, stream), "quantized matmul");
}

Status MatMulCuda(const CudaWeight& w, const float* x, int n_tokens, float* out, const CudaActivations* scratch,
                  cudaStream_t stream) {
  if (!w.quantized()) {
    return CudaStatus(LaunchFloatMatMul(w.float_view(), x, n_tokens, out, stream), "float matmul");
  }
  if (scratch == nullptr) return absl::InvalidArgumentError("quantized matmul needs activation scratch");
  BF_ASSIGN_OR_RETURN(const ActivationView v, QuantizeActivationsCuda(x, n_tokens, static_cast<uint64_t>(w.cols()),
                                                                      ActScalingFor(w.type()), nullptr, *scratch,
                                                                      stream));
  return MatMulQuantizedCuda(w, v, out, stream);
}

}  // namespace bitfleet::kernels::cuda

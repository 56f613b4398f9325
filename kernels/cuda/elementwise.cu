// Elementwise FFN gates (SiLU, squared ReLU) and the residual add, grid-stride over n values;
// the projection scale; the row bias (Qwen2's Q/K/V biases); the row gather of the logit rows.
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

enum class Op { kSiluMul, kRelu2Mul, kAdd };

template <Op O>
__global__ void __launch_bounds__(kThreads) ElementwiseKernel(const float* a, const float* b, int64_t n, float* out) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < n; i += int64_t{gridDim.x} * kThreads) {
    const float g = a[i];
    const float u = b[i];
    if constexpr (O == Op::kSiluMul) {
      // The reference evaluates g / (1 + exp(-g)) * up in double; double here keeps the
      // result within an ulp or two of it for every input.
      const double gd = g;
      out[i] = static_cast<float>(gd / (1.0 + exp(-gd)) * u);
    } else if constexpr (O == Op::kRelu2Mul) {
      const float r = g > 0.0f ? g : 0.0f;
      out[i] = __fmul_rn(__fmul_rn(r, r), u);  // two rounded products, never fused
    } else {
      out[i] = __fadd_rn(g, u);
    }
  }
}

template <Op O>
cudaError_t Launch(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return LaunchDependent(ElementwiseKernel<O>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), stream, a, b, n, out);
}

__global__ void __launch_bounds__(kThreads) ScaleKernel(float* x, int64_t n, float scale) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < n; i += int64_t{gridDim.x} * kThreads) {
    x[i] = __fmul_rn(x[i], scale);
  }
}

// x[t, i] += bias[i], grid-stride over n_tokens × dim values.
__global__ void __launch_bounds__(kThreads) AddRowBiasKernel(float* x, const float* bias, int64_t n, int dim) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < n; i += int64_t{gridDim.x} * kThreads) {
    x[i] = __fadd_rn(x[i], bias[i % dim]);
  }
}

// Block r copies row rows[r] of src to row r of dst.
__global__ void __launch_bounds__(kThreads) GatherRowsKernel(const float* src, const int32_t* rows, int64_t row_floats,
                                                             float* dst) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  const float* s = src + int64_t{rows[blockIdx.x]} * row_floats;
  float* d = dst + int64_t{blockIdx.x} * row_floats;
  for (int64_t i = threadIdx.x; i < row_floats; i += kThreads) d[i] = s[i];
}

}  // namespace

cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int n_rows, int64_t row_floats, float* dst,
                             cudaStream_t stream) {
  if (n_rows < 0 || row_floats < 0) return cudaErrorInvalidValue;
  if (n_rows == 0 || row_floats == 0) return cudaSuccess;
  return LaunchDependent(GatherRowsKernel, dim3(static_cast<unsigned>(n_rows)), dim3(kThreads), stream, src, rows,
                         row_floats, dst);
}

cudaError_t LaunchScale(float* x, int64_t n, float scale, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return LaunchDependent(ScaleKernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), stream, x, n, scale);
}

cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
  return Launch<Op::kSiluMul>(gate, up, n, out, stream);
}
cudaError_t LaunchRelu2Mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
  return Launch<Op::kRelu2Mul>(gate, up, n, out, stream);
}
cudaError_t LaunchAdd(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream) {
  return Launch<Op::kAdd>(a, b, n, out, stream);
}

cudaError_t LaunchAddRowBias(float* x, const float* bias, int n_tokens, int dim, cudaStream_t stream) {
  if (n_tokens < 0 || dim <= 0) return cudaErrorInvalidValue;
  const int64_t n = int64_t{n_tokens} * dim;
  if (n == 0) return cudaSuccess;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return LaunchDependent(AddRowBiasKernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), stream, x, bias, n,
                         dim);
}

}  // namespace bitfleet::kernels::cuda

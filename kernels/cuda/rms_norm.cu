// RMSNorm, its sum-of-squares partial and the normalisation from an all-reduced sum (BitNet's
// sub-norms under tensor parallelism): one block per token, sums in double as the reference.
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ double TokenSumSquares(const float* __restrict__ xt, int dim, double* scratch) {
  double s = 0.0;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    const double v = xt[i];
    s += v * v;
  }
  return BlockSum(s, scratch);
}

// The reference computes x * scale * weight in double and rounds once.
__device__ __forceinline__ void Normalize(const float* __restrict__ xt, const float* __restrict__ weight, int dim,
                                          double scale, float* yt) {
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    yt[i] = static_cast<float>(static_cast<double>(xt[i]) * scale * static_cast<double>(weight[i]));
  }
}

__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(const float* x, const float* __restrict__ weight, int dim, float eps, float* y) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  __shared__ double scratch[32];
  const float* xt = x + int64_t{blockIdx.x} * dim;
  const double s = TokenSumSquares(xt, dim, scratch);
  const double scale = 1.0 / sqrt(s / dim + static_cast<double>(eps));
  Normalize(xt, weight, dim, scale, y + int64_t{blockIdx.x} * dim);
}

__global__ void __launch_bounds__(kThreads) SumSquaresKernel(const float* __restrict__ x, int dim, float* sum_sq) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  __shared__ double scratch[32];
  const double s = TokenSumSquares(x + int64_t{blockIdx.x} * dim, dim, scratch);
  if (threadIdx.x == 0) sum_sq[blockIdx.x] = static_cast<float>(s);
}

__global__ void __launch_bounds__(kThreads)
    RmsNormWithSumSquaresKernel(const float* x, const float* __restrict__ weight, int dim,
                                const float* __restrict__ sum_sq, int full_dim, float eps, float* y) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  const double scale =
      1.0 / sqrt(static_cast<double>(sum_sq[blockIdx.x]) / full_dim + static_cast<double>(eps));
  Normalize(x + int64_t{blockIdx.x} * dim, weight, dim, scale, y + int64_t{blockIdx.x} * dim);
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, const float* weight, int n_tokens, int dim, float eps, float* y,
                          cudaStream_t stream) {
  if (n_tokens < 0 || dim <= 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(RmsNormKernel, dim3(n_tokens), dim3(kThreads), stream, x, weight, dim, eps, y);
}

cudaError_t LaunchSumSquares(const float* x, int n_tokens, int dim, float* sum_sq, cudaStream_t stream) {
  if (n_tokens < 0 || dim <= 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(SumSquaresKernel, dim3(n_tokens), dim3(kThreads), stream, x, dim, sum_sq);
}

cudaError_t LaunchRmsNormWithSumSquares(const float* x, const float* weight, int n_tokens, int dim,
                                        const float* sum_sq, int full_dim, float eps, float* y,
                                        cudaStream_t stream) {
  if (n_tokens < 0 || dim <= 0 || full_dim <= 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(RmsNormWithSumSquaresKernel, dim3(n_tokens), dim3(kThreads), stream, x, weight, dim, sum_sq,
                         full_dim, eps, y);
}

}  // namespace bitfleet::kernels::cuda

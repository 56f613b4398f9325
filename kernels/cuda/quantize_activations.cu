// Per-token int8 activation quantization (kernels/matmul.h semantics, bit for bit): one block
// per token, 256 threads.
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"
#include "kernels/cuda/quantize_row.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    QuantizeActivationsKernel(const float* __restrict__ x, int64_t cols, const float* __restrict__ absmax_in,
                              int64_t stride, int8_t* __restrict__ q, float* __restrict__ absmax_out,
                              int32_t* __restrict__ sums) {
  // The mat-vec that consumes q starts early and prefetches its weight meanwhile.
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const float* xt = x + t * cols;

  float absmax;
  if (absmax_in != nullptr) {
    absmax = absmax_in[t];
  } else {
    float m = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) m = fmaxf(m, fabsf(xt[c]));
    absmax = BlockMax(m, scratch);
  }
  if (threadIdx.x == 0) absmax_out[t] = absmax;
  const float inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;

  QuantizeRow<kThreads>([xt](int64_t c) { return xt[c]; }, cols, stride, inv, q + t * stride, sums + t * (stride / 32));
}

}  // namespace

cudaError_t LaunchQuantizeActivations(const float* x, int n_tokens, int64_t cols, const float* absmax_in,
                                      int64_t stride, int8_t* q, float* absmax_out, int32_t* sums,
                                      cudaStream_t stream) {
  if (n_tokens < 0 || cols <= 0 || stride < cols || stride % 256 != 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(QuantizeActivationsKernel, dim3(n_tokens), dim3(kThreads), stream, x, cols, absmax_in, stride,
                         q, absmax_out, sums);
}

}  // namespace bitfleet::kernels::cuda

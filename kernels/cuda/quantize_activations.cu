// int8 activation quantization (kernels/matmul.h semantics, bit for bit), per token or per
// 32-column block: one block per token, 256 threads, the row quantized by QuantizeRow
// (kernels/cuda/quantize_row.cuh).
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/matmul_launch.h"
#include "kernels/cuda/quantize_row.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Token blockIdx.x. Per token (`per_block` false) the row's absmax (given or computed) scales
// every element and is repeated as the step of every block; per block each 32-column run takes
// its own absmax and absmax_out gets the row's max.
__global__ void __launch_bounds__(kThreads)
    QuantizeActivationsKernel(const float* __restrict__ x, int64_t cols, bool per_block,
                              const float* __restrict__ absmax_in, int64_t stride, int8_t* __restrict__ q,
                              float* __restrict__ absmax_out, int32_t* __restrict__ sums,
                              float* __restrict__ block_steps) {
  // The mat-vec that consumes q starts early and prefetches its weight meanwhile.
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const float* xt = x + t * cols;

  float absmax = 0.0f;
  if (!per_block) {
    if (absmax_in != nullptr) {
      absmax = absmax_in[t];
    } else {
      float m = 0.0f;
      for (int64_t c = threadIdx.x; c < cols; c += kThreads) m = fmaxf(m, fabsf(xt[c]));
      absmax = BlockMax(m, scratch);
    }
    if (threadIdx.x == 0) absmax_out[t] = absmax;
  }

  const float run_max = QuantizeRow<kThreads>([xt](int64_t c) { return xt[c]; }, cols, stride, per_block, absmax,
                                              q + t * stride, sums + t * (stride / 32),
                                              block_steps + t * (stride / 32));
  if (per_block) {
    const float m = BlockMax(run_max, scratch);
    if (threadIdx.x == 0) absmax_out[t] = m;
  }
}

cudaError_t Launch(const float* x, int n_tokens, int64_t cols, bool per_block, const float* absmax_in,
                   int64_t stride, int8_t* q, float* absmax_out, int32_t* sums, float* block_steps,
                   cudaStream_t stream) {
  if (n_tokens < 0 || cols <= 0 || stride < cols || stride % 256 != 0 || q == nullptr || absmax_out == nullptr ||
      sums == nullptr || block_steps == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(QuantizeActivationsKernel, dim3(n_tokens), dim3(kThreads), stream, x, cols, per_block,
                         absmax_in, stride, q, absmax_out, sums, block_steps);
}

}  // namespace

cudaError_t LaunchQuantizeActivations(const float* x, int n_tokens, int64_t cols, const float* absmax_in,
                                      int64_t stride, int8_t* q, float* absmax_out, int32_t* sums,
                                      float* block_steps, cudaStream_t stream) {
  return Launch(x, n_tokens, cols, false, absmax_in, stride, q, absmax_out, sums, block_steps, stream);
}

cudaError_t LaunchQuantizeActivationBlocks(const float* x, int n_tokens, int64_t cols, int64_t stride, int8_t* q,
                                           float* absmax_out, int32_t* sums, float* block_steps,
                                           cudaStream_t stream) {
  return Launch(x, n_tokens, cols, true, nullptr, stride, q, absmax_out, sums, block_steps, stream);
}

}  // namespace bitfleet::kernels::cuda

// RMSNorm fused with the int8 activation quantization that follows it in a decode step (and
// optionally with the op before it: a residual add, or BitNet's squared-ReLU gate), one block per
// token, per token or per 32-column block (the scaling of the weights it feeds: kernels/matmul.h
// ActScalingFor). Bit for bit the unfused sequence: the sum of squares is reduced in the same
// order as RmsNormKernel's (same thread count and loop), the normalized value is recomputed with
// the same double expression wherever it is needed instead of being stored, and the quantization
// is QuantizeActivationsKernel's (QuantizeRow). What it saves is two or three kernel boundaries per use (2 to 3 µs
// each in a decode step on an H200) and the round trips of the intermediate rows.
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_launch.h"
#include "kernels/cuda/quantize_row.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // RmsNormKernel's and QuantizeActivationsKernel's: the same sums

enum class Input { kPlain, kAdd, kRelu2Mul };

// Element i of the row to normalize. kAdd: a[i] + b[i], already written back to a by pass 1
// (so later passes read a); kRelu2Mul: relu(a[i])^2 * b[i] with two rounded products, recomputed.
template <Input I>
__device__ __forceinline__ float Element(const float* a, const float* b, int64_t i) {
  if constexpr (I == Input::kRelu2Mul) {
    const float g = a[i];
    const float r = g > 0.0f ? g : 0.0f;
    return __fmul_rn(__fmul_rn(r, r), b[i]);
  } else {
    return a[i];
  }
}

__device__ __forceinline__ float Normalized(float e, const float* weight, int64_t i, double scale) {
  return static_cast<float>(static_cast<double>(e) * scale * static_cast<double>(weight[i]));
}

template <Input I>
__global__ void __launch_bounds__(kThreads)
    NormQuantizeKernel(float* a, const float* b, const float* __restrict__ weight, int dim, float eps, bool per_block,
                       int64_t stride, int8_t* __restrict__ q, float* __restrict__ absmax_out,
                       int32_t* __restrict__ sums, float* __restrict__ block_steps) {
  AllowDependentLaunch();
  WaitForPrerequisiteGrids();
  __shared__ double dscratch[32];
  __shared__ float fscratch[32];
  const int64_t t = blockIdx.x;
  float* at = a + t * dim;
  const float* bt = b != nullptr ? b + t * dim : nullptr;

  // Pass 1: sum of squares (the residual written back first in kAdd).
  double s = 0.0;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    float e;
    if constexpr (I == Input::kAdd) {
      e = __fadd_rn(at[i], bt[i]);
      at[i] = e;
    } else {
      e = Element<I>(at, bt, i);
    }
    const double v = e;
    s += v * v;
  }
  s = BlockSum(s, dscratch);  // ends with a barrier: pass 1's writes are visible to the block
  const double scale = 1.0 / sqrt(s / dim + static_cast<double>(eps));

  // Pass 2, per token only: absmax of the normalized row (per block each warp run finds its own
  // in pass 3).
  float absmax = 0.0f;
  if (!per_block) {
    float m = 0.0f;
    for (int i = threadIdx.x; i < dim; i += kThreads) {
      m = fmaxf(m, fabsf(Normalized(Element<I>(at, bt, i), weight, i, scale)));
    }
    absmax = BlockMax(m, fscratch);
    if (threadIdx.x == 0) absmax_out[t] = absmax;
  }

  // Pass 3: quantize (the normalized value recomputed), zero up to the stride, block sums and
  // steps.
  const float run_max =
      QuantizeRow<kThreads>([=](int64_t c) { return Normalized(Element<I>(at, bt, c), weight, c, scale); }, dim,
                            stride, per_block, absmax, q + t * stride, sums + t * (stride / 32),
                            block_steps + t * (stride / 32));
  if (per_block) {
    const float row_max = BlockMax(run_max, fscratch);
    if (threadIdx.x == 0) absmax_out[t] = row_max;
  }
}

template <Input I>
cudaError_t Launch(float* a, const float* b, const float* weight, int n_tokens, int dim, float eps, bool per_block,
                   int64_t stride, int8_t* q, float* absmax, int32_t* sums, float* block_steps, cudaStream_t stream) {
  if (n_tokens < 0 || dim <= 0 || stride < dim || stride % 256 != 0 || q == nullptr || absmax == nullptr ||
      sums == nullptr || block_steps == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (n_tokens == 0) return cudaSuccess;
  return LaunchDependent(NormQuantizeKernel<I>, dim3(n_tokens), dim3(kThreads), stream, a, b, weight, dim, eps,
                         per_block, stride, q, absmax, sums, block_steps);
}

}  // namespace

cudaError_t LaunchRmsNormQuantize(const float* x, const float* weight, int n_tokens, int dim, float eps,
                                  bool per_block, int64_t stride, int8_t* q, float* absmax, int32_t* sums,
                                  float* block_steps, cudaStream_t stream) {
  // kPlain never writes `a`.
  return Launch<Input::kPlain>(const_cast<float*>(x), nullptr, weight, n_tokens, dim, eps, per_block, stride, q,
                               absmax, sums, block_steps, stream);
}

cudaError_t LaunchAddRmsNormQuantize(float* x, const float* add, const float* weight, int n_tokens, int dim, float eps,
                                     bool per_block, int64_t stride, int8_t* q, float* absmax, int32_t* sums,
                                     float* block_steps, cudaStream_t stream) {
  return Launch<Input::kAdd>(x, add, weight, n_tokens, dim, eps, per_block, stride, q, absmax, sums, block_steps,
                             stream);
}

cudaError_t LaunchRelu2MulRmsNormQuantize(const float* gate, const float* up, const float* weight, int n_tokens,
                                          int dim, float eps, bool per_block, int64_t stride, int8_t* q,
                                          float* absmax, int32_t* sums, float* block_steps, cudaStream_t stream) {
  return Launch<Input::kRelu2Mul>(const_cast<float*>(gate), up, weight, n_tokens, dim, eps, per_block, stride, q,
                                  absmax, sums, block_steps, stream);
}

}  // namespace bitfleet::kernels::cuda

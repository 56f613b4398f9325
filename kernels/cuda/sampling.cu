// Sampling reductions over rows of logits: arg-max, top-k, the softmax normaliser and
// Gumbel-max, one block per row. Arg-max (greedy decoding, a whole vocabulary row per token)
// streams its row with 1024 threads and four 16-byte loads in flight per thread.
#include <cfloat>
#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/sampling_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kArgMaxThreads = 1024;
constexpr int kArgMaxUnroll = 4;  // float4 loads in flight per thread

struct Candidate {
  float value;
  int64_t index;
};

// The sampler's order: larger value first, then lower id.
__device__ __forceinline__ bool Better(const Candidate& a, const Candidate& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

__device__ __forceinline__ Candidate Worst() { return {-INFINITY, INT64_MAX}; }

__device__ __forceinline__ float Clean(float x) { return isnan(x) ? -INFINITY : x; }

__device__ __forceinline__ Candidate WarpBest(Candidate c) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Candidate other;
    other.value = __shfl_xor_sync(kFullMask, c.value, o);
    other.index = __shfl_xor_sync(kFullMask, c.index, o);
    if (Better(other, c)) c = other;
  }
  return c;
}

// Best over the block (blockDim.x a multiple of 32); every thread gets it. `scratch` holds 32
// candidates. Begins and ends with a barrier.
__device__ __forceinline__ Candidate BlockBest(Candidate c, Candidate* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  c = WarpBest(c);
  __syncthreads();
  if (lane == 0) scratch[warp] = c;
  __syncthreads();
  Candidate best = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : Worst();
  best = WarpBest(best);
  __syncthreads();
  return best;
}

__device__ __forceinline__ void Consider(float x, int64_t id, Candidate& best) {
  const Candidate cand{Clean(x), id};
  if (Better(cand, best)) best = cand;
}

// The row splits into a head before its first 16-byte boundary (< 4 floats), whole float4s,
// and a tail (< 4 floats); the comparison is order-free (Better is a total order on ids), so
// each thread may take its elements in any order.
__global__ void __launch_bounds__(kArgMaxThreads) ArgMaxKernel(LogitRows rows, float* out_value, int64_t* out_index) {
  __shared__ Candidate scratch[32];
  const float* x = rows.logits + int64_t{blockIdx.x} * rows.row_stride;
  const int64_t n = rows.n_cols;
  const int64_t id0 = rows.index_offset;
  const int64_t head = min(n, static_cast<int64_t>(((16 - (reinterpret_cast<uintptr_t>(x) & 15)) & 15) / 4));
  const int64_t n_vec = (n - head) / 4;
  const int64_t tail = head + 4 * n_vec;
  Candidate best = Worst();
  if (threadIdx.x < head) Consider(x[threadIdx.x], id0 + threadIdx.x, best);
  if (tail + threadIdx.x < n) Consider(x[tail + threadIdx.x], id0 + tail + threadIdx.x, best);
  const float4* xv = reinterpret_cast<const float4*>(x + head);
  for (int64_t j0 = threadIdx.x; j0 < n_vec; j0 += kArgMaxUnroll * kArgMaxThreads) {
    float4 v[kArgMaxUnroll];
#pragma unroll
    for (int u = 0; u < kArgMaxUnroll; ++u) {
      const int64_t j = j0 + u * kArgMaxThreads;
      if (j < n_vec) v[u] = __ldg(xv + j);
    }
#pragma unroll
    for (int u = 0; u < kArgMaxUnroll; ++u) {
      const int64_t j = j0 + u * kArgMaxThreads;
      if (j < n_vec) {
        const int64_t id = id0 + head + 4 * j;
        Consider(v[u].x, id, best);
        Consider(v[u].y, id + 1, best);
        Consider(v[u].z, id + 2, best);
        Consider(v[u].w, id + 3, best);
      }
    }
  }
  best = BlockBest(best, scratch);
  if (threadIdx.x == 0) {
    out_value[blockIdx.x] = best.value;
    out_index[blockIdx.x] = best.index;
  }
}

// k passes; pass r takes the best candidate strictly worse than pass r - 1's winner.
__global__ void __launch_bounds__(kThreads)
    TopKKernel(LogitRows rows, int k, float* out_values, int64_t* out_indices) {
  __shared__ Candidate scratch[32];
  const float* x = rows.logits + int64_t{blockIdx.x} * rows.row_stride;
  Candidate prev{INFINITY, -1};  // better than everything
  for (int r = 0; r < k; ++r) {
    Candidate best = Worst();
    for (int64_t c = threadIdx.x; c < rows.n_cols; c += kThreads) {
      const Candidate cand{Clean(x[c]), rows.index_offset + c};
      if (Better(prev, cand) && Better(cand, best)) best = cand;
    }
    best = BlockBest(best, scratch);
    if (threadIdx.x == 0) {
      out_values[int64_t{blockIdx.x} * k + r] = best.value;
      out_indices[int64_t{blockIdx.x} * k + r] = best.index;
    }
    prev = best;
  }
}

__global__ void __launch_bounds__(kThreads)
    MaxSumExpKernel(LogitRows rows, const float* __restrict__ inv_temperature, float* out_max, float* out_sum) {
  __shared__ float scratch[32];
  const float* x = rows.logits + int64_t{blockIdx.x} * rows.row_stride;
  const float it = inv_temperature[blockIdx.x];
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < rows.n_cols; c += kThreads) m = fmaxf(m, Clean(x[c]) * it);
  m = BlockMax(m, scratch);
  float s = 0.0f;
  if (m > -INFINITY) {  // an all -inf row sums to 0 instead of NaN
    for (int64_t c = threadIdx.x; c < rows.n_cols; c += kThreads) s += expf(Clean(x[c]) * it - m);
  }
  s = BlockSum(s, scratch);
  if (threadIdx.x == 0) {
    out_max[blockIdx.x] = m;
    out_sum[blockIdx.x] = s;
  }
}

__global__ void __launch_bounds__(kThreads)
    GumbelArgMaxKernel(LogitRows rows, const float* __restrict__ inv_temperature, const uint64_t* __restrict__ seeds,
                       float* out_value, int64_t* out_index) {
  __shared__ Candidate scratch[32];
  const float* x = rows.logits + int64_t{blockIdx.x} * rows.row_stride;
  const double it = inv_temperature[blockIdx.x];
  const uint64_t seed = seeds[blockIdx.x];
  Candidate best = Worst();
  for (int64_t c = threadIdx.x; c < rows.n_cols; c += kThreads) {
    const int64_t id = rows.index_offset + c;
    const float v = static_cast<float>(static_cast<double>(Clean(x[c])) * it + GumbelNoise(seed, id));
    const Candidate cand{Clean(v), id};
    if (Better(cand, best)) best = cand;
  }
  best = BlockBest(best, scratch);
  if (threadIdx.x == 0) {
    out_value[blockIdx.x] = best.value;
    out_index[blockIdx.x] = best.index;
  }
}

bool ValidRows(const LogitRows& rows) {
  return rows.n_rows >= 0 && rows.n_cols > 0 && rows.row_stride >= rows.n_cols && rows.index_offset >= 0;
}

}  // namespace

cudaError_t LaunchArgMax(const LogitRows& rows, float* out_value, int64_t* out_index, cudaStream_t stream) {
  if (!ValidRows(rows)) return cudaErrorInvalidValue;
  if (rows.n_rows == 0) return cudaSuccess;
  ArgMaxKernel<<<rows.n_rows, kArgMaxThreads, 0, stream>>>(rows, out_value, out_index);
  return cudaGetLastError();
}

cudaError_t LaunchTopK(const LogitRows& rows, int k, float* out_values, int64_t* out_indices, cudaStream_t stream) {
  if (!ValidRows(rows) || k < 1 || k > kMaxTopK || k > rows.n_cols) return cudaErrorInvalidValue;
  if (rows.n_rows == 0) return cudaSuccess;
  TopKKernel<<<rows.n_rows, kThreads, 0, stream>>>(rows, k, out_values, out_indices);
  return cudaGetLastError();
}

cudaError_t LaunchMaxSumExp(const LogitRows& rows, const float* inv_temperature, float* out_max, float* out_sum,
                            cudaStream_t stream) {
  if (!ValidRows(rows)) return cudaErrorInvalidValue;
  if (rows.n_rows == 0) return cudaSuccess;
  MaxSumExpKernel<<<rows.n_rows, kThreads, 0, stream>>>(rows, inv_temperature, out_max, out_sum);
  return cudaGetLastError();
}

cudaError_t LaunchGumbelArgMax(const LogitRows& rows, const float* inv_temperature, const uint64_t* seeds,
                               float* out_value, int64_t* out_index, cudaStream_t stream) {
  if (!ValidRows(rows)) return cudaErrorInvalidValue;
  if (rows.n_rows == 0) return cudaSuccess;
  GumbelArgMaxKernel<<<rows.n_rows, kThreads, 0, stream>>>(rows, inv_temperature, seeds, out_value, out_index);
  return cudaGetLastError();
}

}  // namespace bitfleet::kernels::cuda

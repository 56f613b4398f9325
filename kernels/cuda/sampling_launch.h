// Launchers of the sampling reductions over rows of logits on the GPU. Under tensor parallelism
// the LM head is vocab-parallel: each rank runs these on its slice of the vocabulary (with
// `index_offset` = the slice's first token id) and the ranks combine the small results (a
// (value, id) pair, k candidates, or a (max, sum) pair) over the communicator, so only token
// ids and a few floats ever leave the GPU.
//
// Order used everywhere: a candidate is better when its value is larger, or equal with a lower
// token id (the CPU sampler's tie rule). NaN logits count as -inf.
// Contracts as in kernels/cuda/matmul_launch.h (device pointers, queued on `stream`).
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/weight_layout.h"  // BF_HOST_DEVICE

namespace bitfleet::kernels::cuda {

// Rows are `row_stride` floats apart; each has `n_cols` logits.
struct LogitRows {
  const float* logits = nullptr;
  int n_rows = 0;
  int64_t n_cols = 0;
  int64_t row_stride = 0;
  int64_t index_offset = 0;  // token id of column 0
};

// Greedy: the best (value, id) of each row.
cudaError_t LaunchArgMax(const LogitRows& rows, float* out_value, int64_t* out_index, cudaStream_t stream);

// The k best (value, id) of each row, best first: out_* hold n_rows × k. k in [1, kMaxTopK] and
// at most n_cols.
inline constexpr int kMaxTopK = 256;
cudaError_t LaunchTopK(const LogitRows& rows, int k, float* out_values, int64_t* out_indices, cudaStream_t stream);

// Softmax normaliser pieces of logits * inv_temperature[row]: out_max = the max, out_sum =
// sum exp(x - max) (float). Ranks combine (m_r, s_r) as M = max m_r, S = sum s_r exp(m_r - M).
cudaError_t LaunchMaxSumExp(const LogitRows& rows, const float* inv_temperature, float* out_max, float* out_sum,
                            cudaStream_t stream);

// Gumbel-max sampling: the best (value, id) of logit * inv_temperature[row] + Gumbel noise, the
// noise a pure function of (seeds[row], token id), so every rank draws the same noise for a
// token and the distributed argmax of the ranks' winners is an exact sample of softmax(logits
// * inv_temperature) over the whole vocabulary.
cudaError_t LaunchGumbelArgMax(const LogitRows& rows, const float* inv_temperature, const uint64_t* seeds,
                               float* out_value, int64_t* out_index, cudaStream_t stream);

// The noise: SplitMix64 of (seed, id) -> u in (0, 1) with 53 bits -> -log(-log(u)), in double.
// Shared by the kernel and the host reference.
BF_HOST_DEVICE double GumbelNoise(uint64_t seed, int64_t token_id) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (static_cast<uint64_t>(token_id) + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const double u = (static_cast<double>(z >> 11) + 0.5) * 0x1.0p-53;  // never 0 or 1
  return -log(-log(u));
}

}  // namespace bitfleet::kernels::cuda

// Paged causal attention for decode and prefill: one block per (query head, token), 4 warps.
//
// Each warp walks chunks of 32 keys (chunk c = warp, warp + 4, ...): lane j scores key 32c + j
// against the query (16-byte K loads, query in shared memory), the warp takes the chunk's max
// and updates its running max / sum (online softmax), then every lane accumulates its own dims
// of P·V over the chunk's keys, reading each V row once, coalesced. The 4 warps' partial
// (max, sum, accumulator) are merged in shared memory at the end.
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/device_util.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxPairsPerLane = kMaxAttentionHeadDim / 64;  // dims owned per lane, in pairs

__device__ __forceinline__ int64_t KvRow(const PagedKv& kv, const int32_t* table, int pos, int g) {
  const int64_t slot = int64_t{table[pos / kv.block_size]} * kv.block_size + pos % kv.block_size;
  return (slot * kv.n_kv_heads + g) * kv.head_dim;
}

__global__ void __launch_bounds__(kThreads)
    AttentionPagedKernel(const float* __restrict__ q, int n_heads, PagedKv kv, PagedKvBatch batch, float scale,
                         float* __restrict__ out) {
  __shared__ float q_s[kMaxAttentionHeadDim];
  __shared__ float warp_max[kWarps];
  __shared__ float warp_sum[kWarps];
  __shared__ float warp_acc[kWarps][kMaxAttentionHeadDim];

  const int h = blockIdx.x;
  const int t = blockIdx.y;
  const int hd = kv.head_dim;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = h / (n_heads / kv.n_kv_heads);
  const int n_keys = batch.token_pos[t] + 1;
  const int32_t* table = batch.block_tables + int64_t{batch.token_seq[t]} * batch.max_blocks_per_seq;

  const float* qh = q + (int64_t{t} * n_heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += kThreads) q_s[d] = qh[d] * scale;
  __syncthreads();

  const int n_pairs = hd / 2;
  float m_run = -INFINITY;
  float l_run = 0.0f;
  float acc[kMaxPairsPerLane][2];
#pragma unroll
  for (int i = 0; i < kMaxPairsPerLane; ++i) acc[i][0] = acc[i][1] = 0.0f;

  for (int c0 = warp * 32; c0 < n_keys; c0 += kWarps * 32) {
    const int j = c0 + lane;
    float s = -INFINITY;
    if (j < n_keys) {
      const uint4* kr = reinterpret_cast<const uint4*>(kv.k + KvRow(kv, table, j, g));
      float dot = 0.0f;
      for (int d8 = 0; d8 < hd / 8; ++d8) {
        const uint4 raw = __ldg(kr + d8);
        const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 kf = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
          dot = fmaf(q_s[8 * d8 + 2 * i], kf.x, dot);
          dot = fmaf(q_s[8 * d8 + 2 * i + 1], kf.y, dot);
        }
      }
      s = dot;
    }
    const float m_new = fmaxf(m_run, WarpMax(s));
    const float p = j < n_keys ? expf(s - m_new) : 0.0f;
    const float corr = expf(m_run - m_new);  // 0 on the first chunk (m_run = -inf)
    l_run = l_run * corr + WarpSum(p);
    m_run = m_new;
#pragma unroll
    for (int i = 0; i < kMaxPairsPerLane; ++i) acc[i][0] *= corr, acc[i][1] *= corr;

    const int chunk_keys = min(32, n_keys - c0);
    for (int jj = 0; jj < chunk_keys; ++jj) {
      const float pj = __shfl_sync(kFullMask, p, jj);
      const __half2* vr = reinterpret_cast<const __half2*>(kv.v + KvRow(kv, table, c0 + jj, g));
#pragma unroll
      for (int i = 0; i < kMaxPairsPerLane; ++i) {
        const int pair = lane + 32 * i;
        if (pair < n_pairs) {
          const float2 vf = __half22float2(vr[pair]);
          acc[i][0] = fmaf(pj, vf.x, acc[i][0]);
          acc[i][1] = fmaf(pj, vf.y, acc[i][1]);
        }
      }
    }
  }

  if (lane == 0) {
    warp_max[warp] = m_run;
    warp_sum[warp] = l_run;
  }
#pragma unroll
  for (int i = 0; i < kMaxPairsPerLane; ++i) {
    const int pair = lane + 32 * i;
    if (pair < n_pairs) {
      warp_acc[warp][2 * pair] = acc[i][0];
      warp_acc[warp][2 * pair + 1] = acc[i][1];
    }
  }
  __syncthreads();

  float m_all = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, warp_max[w]);
  float weights[kWarps];
  float l_all = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weights[w] = warp_sum[w] > 0.0f ? expf(warp_max[w] - m_all) : 0.0f;  // idle warps weigh 0
    l_all += warp_sum[w] * weights[w];
  }
  const float inv_l = 1.0f / l_all;
  float* oh = out + (int64_t{t} * n_heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += kThreads) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v = fmaf(warp_acc[w][d], weights[w], v);
    oh[d] = v * inv_l;
  }
}

}  // namespace

cudaError_t LaunchAttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                                 const PagedKvBatch& batch, float scale, float* out, cudaStream_t stream) {
  if (n_tokens < 0 || n_heads <= 0 || kv.n_kv_heads <= 0 || n_heads % kv.n_kv_heads != 0 || kv.head_dim <= 0 ||
      kv.head_dim % 8 != 0 || kv.head_dim > kMaxAttentionHeadDim || kv.block_size <= 0 || n_tokens > 65535) {
    return cudaErrorInvalidValue;
  }
  if (n_tokens == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(n_heads), static_cast<unsigned>(n_tokens));
  AttentionPagedKernel<<<grid, kThreads, 0, stream>>>(q, n_heads, kv, batch, scale, out);
  return cudaGetLastError();
}

}  // namespace bitfleet::kernels::cuda

// Paged causal attention for decode and prefill, with the keys of a token optionally split
// across blocks (flash-decoding) so that a small decode step still fills the GPU.
//
// AttentionKernel: one block (4 warps) per (token, KV head, split). It serves the query heads of
// the KV head's group, up to kHeadsPerBlock of them (a larger group takes several blocks), so a
// K/V row is read once for all of them. The split's keys are walked in chunks, chunk c by warp
// c % 4. Lane layout: a K or V row (head_dim halves, head_dim/8 pieces of 16 bytes) is read by
// `lpr` lanes (head_dim/8 rounded up to a power of two), lane `col` owning dims 8col..8col+7, so
// one 16-byte load per lane reads rpi = 32/lpr rows; a chunk is n_it <= 8 such loads (8, 16 or
// 32 keys): lane (sub, col) handles the chunk's keys sub + rpi * i. Per chunk:
// 1. lane j looks up the cache row of key c0 + j (one block-table load); the lanes that read a
//    key get its row by shuffle;
// 2. every lane issues all its K and V loads of the chunk (2 * n_it independent loads in flight);
// 3. scores: each lane's 8-dim dot products with the query heads (in shared memory, prescaled
//    by scale * log2(e)), summed over the row's lpr lanes by xor shuffles;
// 4. online softmax in base 2: the warp's chunk max per head rescales the running sum and the
//    accumulators;
// 5. P·V into the lane's 8 dims for its own keys (scores and V rows share the layout: no
//    shuffles).
// Then the lanes of different rows are summed, the 4 warps merged in shared memory, and the
// block writes either the output (one split) or its partial to the workspace (max m, sum l and
// the accumulator, unnormalized: out = acc / l, relative to 2^m).
//
// MergeSplitsKernel: one block per (token, query head) combines the splits' partials with
// weights 2^(m_s - max m) and writes out. An empty partial (no keys: l = 0) weighs nothing and its
// accumulator is never read.
//
// Softmax special values follow the reference: masked keys weigh exactly 0 (never exp of
// -inf - -inf), a key scored -inf weighs 0, a NaN score makes the output NaN.
#include "kernels/cuda/attention_launch.h"

#include <algorithm>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/device_util.cuh"

namespace bitfleet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kHeadsPerBlock = 4;  // query heads of one group served by a block
constexpr int kMaxLoads = 8;       // 16-byte K loads (and V loads) per lane per chunk
constexpr float kLog2E = 1.4426950408889634f;

constexpr int kMergeThreads = 256;

// Split planning: a split covers a multiple of kMinSplitKeys keys (one pass of the 4 warps at
// head_dim 128), and the splits stop growing in number once (token, query head, split) items
// reach kTargetSplitItems: about 4 blocks of 4 heads per SM on a 132-SM GPU.
constexpr int kMinSplitKeys = 64;
constexpr int64_t kTargetSplitItems = 2048;
constexpr int kMaxSplits = 1024;
constexpr int64_t kMaxPlannedKeys = int64_t{1} << 24;  // longer contexts go to the last split

__device__ __forceinline__ void HalvesToFloats(const uint4& raw, float (&f)[8]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

// Element offset of `key`'s row (slot) in the pools, 0 when !wanted or key >= end (nothing read).
__device__ __forceinline__ int64_t KeyRow(const PagedKv& kv, const int32_t* table, int64_t slot_stride, int key,
                                          bool wanted, int end) {
  if (!wanted || key >= end) return 0;
  const int64_t block = __ldg(table + key / kv.block_size);
  return (block * kv.block_size + key % kv.block_size) * slot_stride;
}

// Grid (n_tokens, n_kv_heads * head_tiles, n_splits). split_keys: keys per split (the last one
// takes every key from its start on). n_splits == 1: writes out; else the partials to ws_acc
// ([token][head][split][head_dim]) and ws_ml ([token][head][split] of (m, l)).
// 3 blocks per SM (at most 168 registers): enough loads in flight to stream K/V at full rate.
__global__ void __launch_bounds__(kThreads, 3)
    AttentionKernel(const float* __restrict__ q, int n_heads, PagedKv kv, PagedKvBatch batch, float q_scale,
                    int head_tiles, int n_splits, int split_keys, float* __restrict__ out, float* __restrict__ ws_acc,
                    float2* __restrict__ ws_ml) {
  __shared__ float warp_m[kWarps][kHeadsPerBlock];
  __shared__ float warp_l[kWarps][kHeadsPerBlock];
  __shared__ __align__(16) float warp_acc[kWarps][kHeadsPerBlock][kMaxAttentionHeadDim];
  __shared__ __align__(16) float q_s[kHeadsPerBlock][kMaxAttentionHeadDim];

  AllowDependentLaunch();
  WaitForPrerequisiteGrids();

  const int t = blockIdx.x;
  const int g = blockIdx.y / head_tiles;
  const int tile = blockIdx.y - g * head_tiles;
  const int split = blockIdx.z;
  const int group = n_heads / kv.n_kv_heads;
  const int head0 = g * group + tile * kHeadsPerBlock;
  const int nh = min(kHeadsPerBlock, group - tile * kHeadsPerBlock);
  const int hd = kv.head_dim;
  const bool direct = n_splits == 1;

  // This split's keys [begin, end) of the token's n_keys (block-uniform).
  const int n_keys = __ldg(batch.token_pos + t) + 1;
  const int seq = __ldg(batch.token_seq + t);
  const int64_t begin64 = int64_t{split} * split_keys;
  if (begin64 >= n_keys) {  // nothing to attend: an empty partial (or, without keys at all, NaN)
    if (direct) {
      for (int idx = threadIdx.x; idx < nh * hd; idx += kThreads) {
        out[(int64_t{t} * n_heads + head0) * hd + idx] = __int_as_float(0x7fc00000);
      }
    } else if (threadIdx.x < nh) {
      ws_ml[(int64_t{t} * n_heads + head0 + threadIdx.x) * n_splits + split] = make_float2(-INFINITY, 0.0f);
    }
    return;
  }
  const int begin = static_cast<int>(begin64);
  const int end = split == n_splits - 1 ? n_keys : static_cast<int>(min(int64_t{n_keys}, begin64 + split_keys));

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int pieces = hd >> 3;                  // 16-byte pieces per row
  const int lpr_log2 = 32 - __clz(pieces - 1);  // lanes per row = 2^lpr_log2 >= pieces
  const int lpr = 1 << lpr_log2;
  const int rpi = 32 >> lpr_log2;             // rows per load
  const int n_it = min(kMaxLoads, lpr);       // loads per chunk
  const int chunk = n_it * rpi;               // keys per chunk: 8, 16 or 32
  const int sub = lane >> lpr_log2;
  const int col = lane & (lpr - 1);
  const bool col_live = col < pieces;

  const int32_t* table = batch.block_tables + int64_t{seq} * batch.max_blocks_per_seq;
  const int64_t slot_stride = int64_t{kv.n_kv_heads} * hd;  // elements between consecutive slots
  const uint16_t* k_base = kv.k + int64_t{g} * hd + 8 * col;
  const uint16_t* v_base = kv.v + int64_t{g} * hd + 8 * col;
  // The block-table lookups run one chunk ahead: the first one's latency overlaps the query load.
  int c0 = begin + warp * chunk;
  int64_t my_row = KeyRow(kv, table, slot_stride, c0 + lane, lane < chunk, end);

  // The query heads, prescaled (scores in base-2 units); lane col reads dims 8col..8col+7.
  for (int idx = threadIdx.x; idx < nh * hd; idx += kThreads) {
    const int h = idx / hd;
    q_s[h][idx - h * hd] = __ldg(q + (int64_t{t} * n_heads + head0) * hd + idx) * q_scale;
  }
  __syncthreads();

  float m_run[kHeadsPerBlock];  // running max (warp-uniform), -inf before the first key
  float l_run[kHeadsPerBlock];  // this lane's share of the running sum: its own keys
  float acc[kHeadsPerBlock][8];
#pragma unroll
  for (int h = 0; h < kHeadsPerBlock; ++h) {
    m_run[h] = -INFINITY;
    l_run[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }

  // Warp-uniform trip count: every shuffle below runs on the whole warp.
  for (; c0 < end; c0 += kWarps * chunk) {
    // 1. Lane j holds the row of key c0 + j (my_row); look up the next chunk's.
    const int64_t next_row = KeyRow(kv, table, slot_stride, c0 + kWarps * chunk + lane, lane < chunk, end);

    // 2. All K and V loads of the chunk; masked keys and dead columns read nothing (zeros).
    uint4 kraw[kMaxLoads];
    uint4 vraw[kMaxLoads];
    bool live[kMaxLoads];  // key sub + rpi * i is one of this split's keys
#pragma unroll
    for (int i = 0; i < kMaxLoads; ++i) {
      kraw[i] = vraw[i] = make_uint4(0, 0, 0, 0);
      live[i] = false;
      if (i < n_it) {  // warp-uniform
        const int kc = sub + rpi * i;  // < chunk <= 32
        const int64_t row = __shfl_sync(kFullMask, my_row, kc);
        live[i] = c0 + kc < end;
        if (live[i] && col_live) {
          kraw[i] = __ldg(reinterpret_cast<const uint4*>(k_base + row));
          vraw[i] = __ldg(reinterpret_cast<const uint4*>(v_base + row));
        }
      }
    }

    // 3. Scores s[i][h], complete in every lane of the row.
    float s[kMaxLoads][kHeadsPerBlock];
#pragma unroll
    for (int i = 0; i < kMaxLoads; ++i) {
      float kf[8];
      HalvesToFloats(kraw[i], kf);
#pragma unroll
      for (int h = 0; h < kHeadsPerBlock; ++h) {
        float dot = 0.0f;
        if (h < nh && col_live) {  // a dead column's q_s is unwritten (maybe NaN): skip it
          const float4 q0 = *reinterpret_cast<const float4*>(&q_s[h][8 * col]);
          const float4 q1 = *reinterpret_cast<const float4*>(&q_s[h][8 * col + 4]);
          dot = fmaf(q0.x, kf[0], dot);
          dot = fmaf(q0.y, kf[1], dot);
          dot = fmaf(q0.z, kf[2], dot);
          dot = fmaf(q0.w, kf[3], dot);
          dot = fmaf(q1.x, kf[4], dot);
          dot = fmaf(q1.y, kf[5], dot);
          dot = fmaf(q1.z, kf[6], dot);
          dot = fmaf(q1.w, kf[7], dot);
        }
        s[i][h] = dot;
      }
    }
#pragma unroll
    for (int i = 0; i < kMaxLoads; ++i) {
      if (i < n_it) {
#pragma unroll
        for (int h = 0; h < kHeadsPerBlock; ++h) {
          if (h < nh) {
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
              if (o < lpr) s[i][h] += __shfl_xor_sync(kFullMask, s[i][h], o);
            }
          }
        }
      }
    }

    // 4. Online softmax per head; s becomes the weight p = 2^(s - m) (0 for masked keys).
#pragma unroll
    for (int h = 0; h < kHeadsPerBlock; ++h) {
      if (h < nh) {
        float chunk_max = -INFINITY;
#pragma unroll
        for (int i = 0; i < kMaxLoads; ++i) {
          if (live[i]) chunk_max = fmaxf(chunk_max, s[i][h]);
        }
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          if (o >= lpr) chunk_max = fmaxf(chunk_max, __shfl_xor_sync(kFullMask, chunk_max, o));
        }
        const float m_new = fmaxf(m_run[h], chunk_max);
        const float m_ref = m_new == -INFINITY ? 0.0f : m_new;  // all -inf so far: weights 0, not NaN
        const float corr = exp2f(m_run[h] - m_ref);             // 0 while m_run is -inf
        m_run[h] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < kMaxLoads; ++i) {
          s[i][h] = live[i] ? exp2f(s[i][h] - m_ref) : 0.0f;
          sum += s[i][h];
        }
        l_run[h] = fmaf(l_run[h], corr, sum);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] *= corr;
      }
    }

    // 5. P·V for the lane's own keys and dims.
#pragma unroll
    for (int i = 0; i < kMaxLoads; ++i) {
      if (live[i]) {
        float vf[8];
        HalvesToFloats(vraw[i], vf);
#pragma unroll
        for (int h = 0; h < kHeadsPerBlock; ++h) {
          if (h < nh) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[h][e] = fmaf(s[i][h], vf[e], acc[h][e]);
          }
        }
      }
    }
    my_row = next_row;
  }

  // Sum the rows' lanes (same col, different sub): the warp's sum and accumulator.
#pragma unroll
  for (int h = 0; h < kHeadsPerBlock; ++h) {
    if (h < nh) {
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        if (o >= lpr) {
          l_run[h] += __shfl_xor_sync(kFullMask, l_run[h], o);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[h][e] += __shfl_xor_sync(kFullMask, acc[h][e], o);
        }
      }
    }
  }
#pragma unroll
  for (int h = 0; h < kHeadsPerBlock; ++h) {
    if (h < nh) {
      if (lane == 0) {
        warp_m[warp][h] = m_run[h];
        warp_l[warp][h] = l_run[h];
      }
      if (sub == 0 && col_live) {
        float4* dst = reinterpret_cast<float4*>(&warp_acc[warp][h][8 * col]);
        dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
        dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
      }
    }
  }
  __syncthreads();

  // Merge the warps (a warp without keys has l = 0 and weighs nothing).
  for (int idx = threadIdx.x; idx < nh * hd; idx += kThreads) {
    const int h = idx / hd;
    const int d = idx - h * hd;
    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (warp_l[w][h] != 0.0f) m_all = fmaxf(m_all, warp_m[w][h]);
    }
    const float m_ref = m_all == -INFINITY ? 0.0f : m_all;
    float l_all = 0.0f;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float wl = warp_l[w][h];
      if (wl != 0.0f) {
        const float weight = exp2f(warp_m[w][h] - m_ref);
        l_all = fmaf(wl, weight, l_all);
        v = fmaf(warp_acc[w][h][d], weight, v);
      }
    }
    const int64_t pair = int64_t{t} * n_heads + head0 + h;
    if (direct) {
      out[pair * hd + d] = v / l_all;
    } else {
      ws_acc[(pair * n_splits + split) * hd + d] = v;
      if (d == 0) ws_ml[pair * n_splits + split] = make_float2(m_ref, l_all);
    }
  }
}

// One block per (token, query head) = pair: out = sum_s 2^(m_s - m) acc_s / sum_s 2^(m_s - m) l_s
// over the non-empty splits s, m their max. Threads (slice, col): col a 4-dim column, slices
// stride the splits; each thread loads its first kMergePreload accumulators before reading the
// (m, l) pairs, so both loads are in flight together. Then the slices are summed in shared memory.
constexpr int kMergePreload = 8;

__global__ void __launch_bounds__(kMergeThreads)
    MergeSplitsKernel(const float* __restrict__ ws_acc, const float2* __restrict__ ws_ml, int n_splits, int hd,
                      float* __restrict__ out) {
  __shared__ float scratch[32];
  __shared__ float split_m[kMaxSplits];
  __shared__ float split_l[kMaxSplits];
  __shared__ float split_w[kMaxSplits];
  __shared__ float4 slice_acc[kMergeThreads];

  AllowDependentLaunch();
  WaitForPrerequisiteGrids();

  const int64_t pair = blockIdx.x;
  const int n_cols = hd >> 2;
  const int n_slices = kMergeThreads / n_cols;
  const int slice = threadIdx.x / n_cols;
  const int col = threadIdx.x - slice * n_cols;
  const bool slice_live = slice < n_slices;
  // Accumulators of splits slice + n_slices * u (an empty split's is garbage: read, never used).
  const float4* acc = reinterpret_cast<const float4*>(ws_acc + pair * n_splits * hd) + col;
  float4 pre[kMergePreload];
#pragma unroll
  for (int u = 0; u < kMergePreload; ++u) {
    const int s = slice + n_slices * u;
    pre[u] = slice_live && s < n_splits ? acc[int64_t{s} * n_cols] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }

  const float2* ml = ws_ml + pair * n_splits;
  float m = -INFINITY;
  for (int s = threadIdx.x; s < n_splits; s += kMergeThreads) {
    const float2 x = ml[s];
    split_m[s] = x.x;
    split_l[s] = x.y;
    if (x.y != 0.0f) m = fmaxf(m, x.x);
  }
  const float m_all = BlockMax(m, scratch);
  const float m_ref = m_all == -INFINITY ? 0.0f : m_all;
  float l = 0.0f;
  for (int s = threadIdx.x; s < n_splits; s += kMergeThreads) {
    const float weight = split_l[s] != 0.0f ? exp2f(split_m[s] - m_ref) : 0.0f;
    split_w[s] = weight;
    if (split_l[s] != 0.0f) l = fmaf(split_l[s], weight, l);
  }
  const float l_all = BlockSum(l, scratch);  // its barriers also publish split_w and split_l

  float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (slice_live) {
    auto add = [&](int s, const float4& x) {
      if (split_l[s] != 0.0f) {
        const float weight = split_w[s];
        a.x = fmaf(weight, x.x, a.x);
        a.y = fmaf(weight, x.y, a.y);
        a.z = fmaf(weight, x.z, a.z);
        a.w = fmaf(weight, x.w, a.w);
      }
    };
#pragma unroll
    for (int u = 0; u < kMergePreload; ++u) {
      const int s = slice + n_slices * u;
      if (s < n_splits) add(s, pre[u]);
    }
#pragma unroll 4
    for (int s = slice + n_slices * kMergePreload; s < n_splits; s += n_slices) add(s, acc[int64_t{s} * n_cols]);
  }
  slice_acc[threadIdx.x] = a;
  __syncthreads();
  if (threadIdx.x < n_cols) {
    float4 sum = slice_acc[threadIdx.x];
    for (int sl = 1; sl < n_slices; ++sl) {
      const float4 x = slice_acc[sl * n_cols + threadIdx.x];
      sum.x += x.x;
      sum.y += x.y;
      sum.z += x.z;
      sum.w += x.w;
    }
    float* o = out + pair * hd + 4 * threadIdx.x;
    o[0] = sum.x / l_all;
    o[1] = sum.y / l_all;
    o[2] = sum.z / l_all;
    o[3] = sum.w / l_all;
  }
}

bool ValidShapes(int n_tokens, int n_heads, const PagedKv& kv) {
  if (n_tokens < 0 || n_heads <= 0 || kv.n_kv_heads <= 0 || n_heads % kv.n_kv_heads != 0 || kv.head_dim <= 0 ||
      kv.head_dim % 8 != 0 || kv.head_dim > kMaxAttentionHeadDim || kv.block_size <= 0) {
    return false;
  }
  const int group = n_heads / kv.n_kv_heads;
  const int64_t head_blocks = int64_t{kv.n_kv_heads} * ((group + kHeadsPerBlock - 1) / kHeadsPerBlock);
  return head_blocks <= 65535;  // gridDim.y
}

// Floats of workspace a launch with `plan` needs: partial accumulators and (m, l) pairs.
int64_t WorkspaceNeed(int n_tokens, int n_heads, int head_dim, const AttentionSplitPlan& plan) {
  if (plan.n_splits <= 1) return 0;
  return int64_t{n_tokens} * n_heads * plan.n_splits * (head_dim + 2);
}

cudaError_t Launch(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const PagedKvBatch& batch,
                   float scale, const AttentionSplitPlan& plan, float* workspace, float* out, cudaStream_t stream) {
  const int group = n_heads / kv.n_kv_heads;
  const int head_tiles = (group + kHeadsPerBlock - 1) / kHeadsPerBlock;
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(kv.n_kv_heads * head_tiles),
                  static_cast<unsigned>(plan.n_splits));
  const int64_t pairs = int64_t{n_tokens} * n_heads;
  float* ws_acc = plan.n_splits > 1 ? workspace : nullptr;
  float2* ws_ml =
      plan.n_splits > 1 ? reinterpret_cast<float2*>(workspace + pairs * plan.n_splits * kv.head_dim) : nullptr;
  const cudaError_t error = LaunchDependent(AttentionKernel, grid, dim3(kThreads), stream, q, n_heads, kv, batch,
                                            scale * kLog2E, head_tiles, plan.n_splits, plan.split_keys, out, ws_acc,
                                            ws_ml);
  if (error != cudaSuccess || plan.n_splits == 1) return error;
  return LaunchDependent(MergeSplitsKernel, dim3(static_cast<unsigned>(pairs)), dim3(kMergeThreads), stream,
                         static_cast<const float*>(ws_acc), static_cast<const float2*>(ws_ml), plan.n_splits,
                         kv.head_dim, out);
}

}  // namespace

AttentionSplitPlan PlanAttentionSplits(int n_tokens, int n_heads, int max_keys) {
  const int64_t pairs = std::max<int64_t>(1, int64_t{n_tokens} * n_heads);
  const int64_t keys = std::clamp<int64_t>(max_keys, 1, kMaxPlannedKeys);
  const int64_t by_keys = (keys + kMinSplitKeys - 1) / kMinSplitKeys;
  const int64_t by_work = (kTargetSplitItems + pairs - 1) / pairs;
  const int64_t n = std::max<int64_t>(1, std::min({by_keys, by_work, int64_t{kMaxSplits}}));
  const int64_t per_split = (keys + n - 1) / n;
  const int64_t split_keys = (per_split + kMinSplitKeys - 1) / kMinSplitKeys * kMinSplitKeys;
  return {static_cast<int>((keys + split_keys - 1) / split_keys), static_cast<int>(split_keys)};
}

int64_t AttentionSplitWorkspaceFloats(int n_tokens, int n_heads, int head_dim, int max_keys) {
  if (n_tokens <= 0 || n_heads <= 0 || head_dim <= 0) return 0;
  // A launch with n' <= n_tokens tokens and max_keys' <= max_keys splits at most
  // min(by_keys, by_work) ways: n' * n_heads * splits <= n_tokens * n_heads * by_keys(max_keys),
  // and, when it splits at all (by_work >= 2, so n' * n_heads < kTargetSplitItems),
  // n' * n_heads * ceil(kTargetSplitItems / (n' * n_heads)) < 2 * kTargetSplitItems.
  const int64_t keys = std::clamp<int64_t>(max_keys, 1, kMaxPlannedKeys);
  const int64_t by_keys = std::min<int64_t>((keys + kMinSplitKeys - 1) / kMinSplitKeys, kMaxSplits);
  if (by_keys <= 1) return 0;
  const int64_t items = std::min(int64_t{n_tokens} * n_heads * by_keys, 2 * kTargetSplitItems);
  return items * (head_dim + 2);
}

cudaError_t LaunchAttentionPagedSplit(const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                                      const PagedKvBatch& batch, float scale, int max_keys, float* workspace,
                                      int64_t workspace_floats, float* out, cudaStream_t stream) {
  if (!ValidShapes(n_tokens, n_heads, kv) || max_keys < 1 || workspace_floats < 0) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  const AttentionSplitPlan plan = PlanAttentionSplits(n_tokens, n_heads, max_keys);
  const int64_t need = WorkspaceNeed(n_tokens, n_heads, kv.head_dim, plan);
  if (need > 0 && (workspace == nullptr || workspace_floats < need || reinterpret_cast<uintptr_t>(workspace) % 16 != 0)) {
    return cudaErrorInvalidValue;
  }
  return Launch(q, n_tokens, n_heads, kv, batch, scale, plan, workspace, out, stream);
}

cudaError_t LaunchAttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                                 const PagedKvBatch& batch, float scale, float* out, cudaStream_t stream) {
  if (!ValidShapes(n_tokens, n_heads, kv)) return cudaErrorInvalidValue;
  if (n_tokens == 0) return cudaSuccess;
  return Launch(q, n_tokens, n_heads, kv, batch, scale, AttentionSplitPlan{1, kMinSplitKeys}, nullptr, out, stream);
}

}  // namespace bitfleet::kernels::cuda

// Launchers of the paged KV-cache write and of paged attention on the GPU: the counterparts of
// kernels/ops.h WriteKv / AttentionPaged, batched over the tokens of a whole step (several
// sequences, each with its own block table), so one launch serves a continuous-batching step:
// decode (one token per sequence), prefill (many tokens of one sequence) or a mix.
//
// Contracts as in kernels/cuda/matmul_launch.h (device pointers, queued on `stream`). The
// PagedKv pools are device memory (cache/kv_storage_cuda.h) with the CPU layout: element
// (block b, slot s, kv head g, dim d) at ((b * block_size + s) * n_kv_heads + g) * head_dim + d,
// f16. Block ids are trusted (validated by the cache module), as on the CPU.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/ops.h"

namespace bitfleet::kernels::cuda {

// Where each token of a step lives. All arrays are device memory.
struct PagedKvBatch {
  const int32_t* token_seq = nullptr;     // [n_tokens]: row of `block_tables` of the token's sequence
  const int32_t* token_pos = nullptr;     // [n_tokens]: position of the token in its sequence
  const int32_t* block_tables = nullptr;  // [n_seqs × max_blocks_per_seq]: block ids per sequence
  int max_blocks_per_seq = 0;
};

// Largest head_dim the attention kernel supports (it must also be a multiple of 8).
inline constexpr int kMaxAttentionHeadDim = 256;

// Writes K and V rows (float, n_tokens × n_kv_heads × head_dim) of each token at its position,
// converted to f16 with round-to-nearest-even (bit-exact with core/fp16.h FloatToHalf).
cudaError_t LaunchWriteKv(const PagedKv& kv, const PagedKvBatch& batch, int n_tokens, const float* k,
                          const float* v, cudaStream_t stream);

// LaunchRope on q (n_tokens × n_heads × head_dim) and on k (n_tokens × n_kv_heads × head_dim),
// both in place at batch.token_pos, then LaunchWriteKv of the roped k and of v: the same bits in
// one launch (head_dim = kv.head_dim).
cudaError_t LaunchRopeWriteKv(float* q, float* k, const float* v, int n_tokens, int n_heads, const PagedKv& kv,
                              const PagedKvBatch& batch, int rot_dim, float freq_base, bool neox,
                              cudaStream_t stream);

// Causal attention: token t (query heads q[t] = n_heads × head_dim) attends to positions
// 0..token_pos[t] of its sequence, which must already be in the cache (write the step's own K/V
// first). GQA: head h reads KV head h / (n_heads / n_kv_heads). out has q's shape and must not
// alias it. scale = 1/sqrt(head_dim) normally. Scores and softmax in float (online softmax).
// One block per (token, KV head): fine for prefill; a decode step of few sequences leaves most
// of the GPU idle, which LaunchAttentionPagedSplit avoids.
cudaError_t LaunchAttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                                 const PagedKvBatch& batch, float scale, float* out, cudaStream_t stream);

// The same attention with each token's keys split across up to n_splits blocks (flash-decoding):
// every split writes a partial softmax (max, sum, unnormalized P·V) to `workspace` and a second
// kernel merges them into out. The host does not read positions, so the split is planned from
// max_keys, an upper bound on token_pos[t] + 1 over the step's tokens: splits of split_keys keys
// (a multiple of 64), as many as the keys need but no more than it takes for a few blocks per SM
// (n_tokens * n_heads * n_splits around 2048); a large step (prefill, big batch) gets one split,
// which writes out directly and uses no workspace. A token with fewer keys leaves its late splits
// empty (they cost one store); one with more than max_keys is still attended correctly, its extra
// keys all going to the last split (slower).
struct AttentionSplitPlan {
  int n_splits = 1;
  int split_keys = 0;  // keys per split; the last split takes every key from its start on
};
AttentionSplitPlan PlanAttentionSplits(int n_tokens, int n_heads, int max_keys);

// Floats of workspace enough for every LaunchAttentionPagedSplit with at most n_tokens tokens and
// at most max_keys (and these n_heads, head_dim): size it once for the largest step. At most
// 4096 * (head_dim + 2) floats (2.1 MB at head_dim 128); 0 when no such launch splits.
int64_t AttentionSplitWorkspaceFloats(int n_tokens, int n_heads, int head_dim, int max_keys);

// workspace: device memory of workspace_floats floats, 16-byte aligned, used by no other launch in
// flight (the partials live there between the two kernels); it may be null when the plan has one
// split. cudaErrorInvalidValue for the shapes LaunchAttentionPaged rejects, max_keys < 1, a
// negative workspace_floats, or, when the plan splits, a null, misaligned or too small workspace
// (fewer than n_tokens * n_heads * n_splits * (head_dim + 2) floats).
cudaError_t LaunchAttentionPagedSplit(const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                                      const PagedKvBatch& batch, float scale, int max_keys, float* workspace,
                                      int64_t workspace_floats, float* out, cudaStream_t stream);

}  // namespace bitfleet::kernels::cuda

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

// Causal attention: token t (query heads q[t] = n_heads × head_dim) attends to positions
// 0..token_pos[t] of its sequence, which must already be in the cache (write the step's own K/V
// first). GQA: head h reads KV head h / (n_heads / n_kv_heads). out has q's shape and must not
// alias it. scale = 1/sqrt(head_dim) normally. Scores and softmax in float (online softmax).
cudaError_t LaunchAttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                                 const PagedKvBatch& batch, float scale, float* out, cudaStream_t stream);

}  // namespace bitfleet::kernels::cuda

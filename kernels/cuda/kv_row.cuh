// The write of one token's K and V rows into the paged cache, shared by the KV write kernel and
// the fused RoPE + KV write. Device code for kernels/cuda/*.cu only.
#pragma once

#include <cuda_fp16.h>

#include "kernels/cuda/attention_launch.h"

namespace bitfleet::kernels::cuda {

// Token t's rows (n_kv_heads × head_dim floats at k and v + t * row) into its cache slot as f16,
// round to nearest even; the block's threads share the row.
__device__ __forceinline__ void WriteKvRow(const PagedKv& kv, const PagedKvBatch& batch, int t, const float* k,
                                           const float* v) {
  const int pos = batch.token_pos[t];
  const int32_t* table = batch.block_tables + int64_t{batch.token_seq[t]} * batch.max_blocks_per_seq;
  const int64_t slot = int64_t{table[pos / kv.block_size]} * kv.block_size + pos % kv.block_size;
  const int row = kv.n_kv_heads * kv.head_dim;
  const int64_t dst = slot * row;
  const int64_t src = int64_t{t} * row;
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    kv.k[dst + i] = __half_as_ushort(__float2half_rn(k[src + i]));
    kv.v[dst + i] = __half_as_ushort(__float2half_rn(v[src + i]));
  }
}

}  // namespace bitfleet::kernels::cuda

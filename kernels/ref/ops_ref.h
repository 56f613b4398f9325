// Scalar references for every op of kernels/ops.h: the same contracts, computed plainly (sums,
// transcendental functions and attention in double). The public ops (kernels/cpu/ops_cpu.cc)
// are tested against these within docs/kernels.md's budgets; ops without a SIMD variant
// (Rope, Softmax) run a float implementation that is tested the same way.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace bitfleet::kernels::ref {

void RmsNormRef(const float* x, const float* weight, int n_tokens, int dim, float eps, float* y);
void SumSquaresRef(const float* x, int n_tokens, int dim, float* sum_sq);
void RmsNormWithSumSquaresRef(const float* x, const float* weight, int n_tokens, int dim, const float* sum_sq,
                              int full_dim, float eps, float* y);
void RopeRef(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim, int rot_dim, float freq_base,
             bool neox);
void SoftmaxRef(float* x, int n);
void SiluMulRef(const float* gate, const float* up, int64_t n, float* out);
// Exactly (g > 0 ? g * g : 0) * up in float: every variant matches it bit for bit.
void Relu2MulRef(const float* gate, const float* up, int64_t n, float* out);
int64_t ArgMaxRef(const float* x, int64_t n);
// f16 conversion by core/fp16.h FloatToHalf (round to nearest even): variants match bit for bit.
void WriteKvRef(const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens, const float* k, const float* v);
// Allocates its own scratch (reference only).
void AttentionPagedRef(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table,
                       int pos0, float scale, float* out);

// Address of (position, kv head) in a paged pool (K or V).
inline uint64_t PagedKvOffset(const PagedKv& kv, const int32_t* block_table, int pos, int kv_head) {
  const uint64_t block = static_cast<uint64_t>(block_table[pos / kv.block_size]);
  const uint64_t slot = block * kv.block_size + pos % kv.block_size;
  return (slot * kv.n_kv_heads + kv_head) * kv.head_dim;
}

}  // namespace bitfleet::kernels::ref

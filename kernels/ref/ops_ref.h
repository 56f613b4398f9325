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
// f16 conversion by core/fp16.h FloatToHalf (round to nearest even); int8 caches through
// QuantizeKvGroupRef. Variants match bit for bit.
void WriteKvRef(const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens, const float* k, const float* v);
// Allocates its own scratch (reference only).
void AttentionPagedRef(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table,
                       int pos0, float scale, float* out);

// One group of an int8 KV row (kernels/ops.h PagedKv): *step = absmax / 127 and codes as
// activation quantization rounds them, or, when the group holds a NaN or an infinity, a NaN step
// and zero codes.
void QuantizeKvGroupRef(const float* x, int n, int8_t* q, float* step);
// The value attention reads for element `off` of the K pool (is_k) or the V pool, either type.
float KvValueRef(const PagedKv& kv, bool is_k, uint64_t off);

// Address of (position, kv head) in a paged pool (K or V).
inline uint64_t PagedKvOffset(const PagedKv& kv, const int32_t* block_table, int pos, int kv_head) {
  const uint64_t block = static_cast<uint64_t>(block_table[pos / kv.block_size]);
  const uint64_t slot = block * kv.block_size + pos % kv.block_size;
  return (slot * kv.n_kv_heads + kv_head) * kv.head_dim;
}

}  // namespace bitfleet::kernels::ref

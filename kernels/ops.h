// Elementwise and attention ops of the transformer forward pass (float activations).
// Each has a scalar reference in kernels/ref/ and may have SIMD variants chosen at start-up.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace bitfleet::kernels {

// Row-wise work (norms, activation quantization, RoPE, gating) of fewer tokens than this runs on
// the calling thread: a pool dispatch costs about a microsecond, more than a few rows take.
inline constexpr int kMinParallelRowTokens = 8;

// y = x / sqrt(mean(x^2) + eps) * weight, for n_tokens rows of `dim`. In-place allowed.
void RmsNorm(const float* x, const float* weight, int n_tokens, int dim, float eps, float* y);

// Sum of squares per token (the partial that tensor parallelism all-reduces for BitNet's
// sub-norms), then the normalisation given the full-row mean square.
void SumSquares(const float* x, int n_tokens, int dim, float* sum_sq);
void RmsNormWithSumSquares(const float* x, const float* weight, int n_tokens, int dim, const float* sum_sq,
                           int full_dim, float eps, float* y);

// Rotary embedding in place on `n_tokens` × `n_heads` × `head_dim` (row-major), rotating the
// first `rot_dim` dims of every head. neox=false rotates consecutive pairs (2i, 2i+1);
// neox=true rotates (i, i + rot_dim/2). theta_i = pos * base^(-2i/rot_dim).
void Rope(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim, int rot_dim, float freq_base,
          bool neox);

// In place: x = softmax(x) over `n` values.
void Softmax(float* x, int n);
// In place: x[i] = exp(x[i] - max) over `n` values; returns their sum (float, summed lane-wise:
// the softmax's normaliser, as Softmax computes it). NaN in, NaN out.
float ExpShiftSum(float* x, int64_t n, float max);

// FFN gates: out = act(gate) * up, act = SiLU or squared ReLU.
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
void Relu2Mul(const float* gate, const float* up, int64_t n, float* out);

// Greedy sampling's reduction: the lowest index holding the largest value of x[0, n), NaNs
// skipped; 0 when there is none (n == 0, every value NaN). n < 2^31.
int64_t ArgMax(const float* x, int64_t n);

// One layer's paged KV storage: `num_blocks` blocks, each block_size tokens × n_kv_heads ×
// head_dim, K and V in separate pools. Block ids index into the pools: the element (block b,
// slot s, kv head g, dim d) is at offset ((b * block_size + s) * n_kv_heads + g) * head_dim + d.
// Block ids in a block table are trusted (validated by the cache module).
//
// Two element types (docs/engine.md, "KV cache element types"):
// - f16 (k, v set): IEEE half bits.
// - int8 (k8, v8 set, k and v null; CPU only): the element at offset o is the f16 rounding of
//   k8[o] * k_steps[o / KvInt8Group(head_dim)] (V alike). A group of KvInt8Group elements of one
//   row shares its step absmax / 127, like Q8_0 blocks; a group holding a NaN or infinity has a
//   NaN step, so a broken row poisons attention as it would in f16.
struct PagedKv {
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
  int num_blocks = 0;
  int8_t* k8 = nullptr;
  int8_t* v8 = nullptr;
  float* k_steps = nullptr;
  float* v_steps = nullptr;

  bool int8() const { return k8 != nullptr; }
};

// Elements of a row of an int8 KV cache that share one step: 32 where head_dim is a multiple of
// 32, else the whole row (tiny models).
inline int KvInt8Group(int head_dim) { return head_dim % 32 == 0 ? 32 : head_dim; }

// Writes `n_tokens` K/V rows (float, n_tokens × n_kv_heads × head_dim) at positions
// pos0..pos0+n_tokens-1 of a sequence whose blocks are `block_table`.
void WriteKv(const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens, const float* k, const float* v);

// Causal attention for one sequence: q is n_tokens × n_heads × head_dim for positions
// pos0..pos0+n_tokens-1; keys/values for positions 0..pos0+n_tokens-1 are read from the paged
// cache. GQA: head h uses KV head h / (n_heads / n_kv_heads). out has q's shape and must not
// alias q. `scratch` holds at least AttentionScratchFloats(pos0, n_tokens) floats per thread.
// scale = 1/sqrt(head_dim) normally. Scores and softmax are computed in float.
inline int64_t AttentionScratchFloats(int pos0, int n_tokens) { return int64_t{pos0} + n_tokens; }
void AttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table, int pos0,
                    float scale, float* out, float* scratch);
// The same, parallel over (token, head) pairs on `pool`; scratch holds pool.size() ×
// AttentionScratchFloats(pos0, n_tokens) floats.
void AttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table, int pos0,
                    float scale, float* out, float* scratch, ThreadPool& pool);

// Decode attention of n_seqs sequences, one new token each (sequence i's at position pos[i], its
// q row q[i] and output out[i], n_heads × head_dim each), whose block tables tables[i] all name
// the same blocks for positions [0, shared_positions): a prompt prefix they share through the
// prefix cache (shared_positions <= pos[i] + 1; larger is clipped). The shared positions are
// attended for the query rows of many sequences together, so each run of shared K/V rows is
// read and converted once per up to 32 rows instead of once per sequence; the sequences' own
// positions follow per sequence. Equals AttentionPaged per sequence up to float rounding (the
// order in which positions are folded into the softmax state differs).
void AttentionSharedPrefix(const float* const* q, int n_seqs, int n_heads, const PagedKv& kv,
                           const int32_t* const* tables, const int32_t* pos, int shared_positions, float scale,
                           float* const* out, ThreadPool& pool);

}  // namespace bitfleet::kernels

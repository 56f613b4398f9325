// Scalar references for the weight-matrix products of kernels/matmul.h and for the int8
// activation quantization (per token or per 32-block) they consume. The optimized variants (kernels/cpu/) are tested
// against these: activation quantization bit for bit, matmuls within docs/kernels.md's budgets.
//
// Two matmul references:
// - MatMulDequantRef: the mathematical definition. Weights decoded by ref::DequantizeTensor
//   (kernels/ref/quant.h), activations dequantized from their int8 form (or taken as floats for
//   F32/F16/BF16), dot products in double.
// - MatMulInt8Ref: the integer path the kernels take. Each weight block is read as integers w
//   with a scale d and offset m (value = w * d + m), block dot products sum(w * q) and sum(q)
//   are exact integers, and the result is (sum_b d_b * dot_b + m_b * sum_b) * absmax / 127
//   (per token) or sum_b step_b * (d_b * dot_b + m_b * sum_b) (per block), in double. Optimized kernels differ from it only by float rounding.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace bitfleet::kernels::ref {

// ---- activation quantization (the definition every variant matches exactly) ----

// 127 / absmax, or 0 when absmax is 0 (then every q is 0). Float arithmetic, as the kernels.
inline float ActivationInvScale(float absmax) { return absmax > 0.0f ? 127.0f / absmax : 0.0f; }
// Dequantization step absmax / 127.
inline float ActivationScale(float absmax) { return absmax / 127.0f; }

// q = clamp(round_half_even(x * inv_scale), -127, 127); NaN x gives 0.
int8_t QuantizeActivationValue(float x, float inv_scale);

// absmax[t] = max_c |x[t*cols + c]|.
void ComputeAbsMaxRef(const float* x, int n_tokens, uint64_t cols, float* absmax);

// q is dense: n_tokens × cols.
void QuantizeActivationsRef(const float* x, int n_tokens, uint64_t cols, const float* absmax, int8_t* q);

// Per 32-column block (ActScaling::kPerBlock): each block [32b, 32b + 32) ∩ [0, cols) of each
// token is quantized with its own absmax a as above, and steps[t * ActBlocks(cols) + b] =
// ActivationScale(a). q is dense: n_tokens × cols.
inline uint64_t ActBlocks(uint64_t cols) { return (cols + 31) / 32; }
void QuantizeActivationBlocksRef(const float* x, int n_tokens, uint64_t cols, int8_t* q, float* steps);

// ---- integer view of weight blocks ----

// One block of a quantized type as integers: value_i = w[i] * d + m. TQ1_0/TQ2_0: w = code - 1
// (TQ2_0's unused code 3 is +2, as ggml decodes it); I2_S: {-1, 0, +1, 0}[code], d = tensor scale;
// Q4_0: w = nibble - 8; Q4_1: w = nibble, m = min; Q8_0: w = qs.
struct IntBlock {
  int8_t w[256];
  float d = 0.0f;
  float m = 0.0f;
};

// Elements per block of the integer view (32, 128 or 256); 0 for non-block types.
uint32_t IntBlockElems(DType type);

// Decodes block `block_index` of `tensor` (the whole GGUF tensor bytes, already size-checked by
// the caller). `i2s_scale` is used for I2_S only.
void DecodeIntBlock(DType type, const uint8_t* tensor, uint64_t block_index, float i2s_scale, IntBlock* out);

// ---- matmul references ----

// out[t*rows + r] = sum_c W[r,c] * xd[t,c] in double. `bytes` is the GGUF tensor (as PackWeight).
// If `absmax` is null, xd = x (float activations; any type). Otherwise xd is x quantized with
// QuantizeActivationsRef(absmax) and dequantized (what the W8A8/W4A8/W2A8 kernels see).
// Also returns, when the spans are non-empty, abs_dot[t*rows + r] = sum_c |W[r,c] * xd[t,c]| and
// abs_w[r] = sum_c |W[r,c]| (the magnitudes error budgets are relative to).
Status MatMulDequantRef(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes, const float* x,
                        int n_tokens, const float* absmax, std::span<double> out, std::span<double> abs_dot = {},
                        std::span<double> abs_w = {});

// The same with x quantized per 32-block by QuantizeActivationBlocksRef and dequantized.
Status MatMulDequantBlocksRef(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes,
                              const float* x, int n_tokens, std::span<double> out, std::span<double> abs_dot = {},
                              std::span<double> abs_w = {});

// The integer path: q is dense n_tokens × cols int8, absmax per token. Quantized types only.
Status MatMulInt8Ref(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes, const int8_t* q,
                     const float* absmax, int n_tokens, std::span<double> out);

// The integer path with per-32-block steps (n_tokens × ActBlocks(cols), as
// QuantizeActivationBlocksRef writes them): out = sum_b step_b * (d_b * dot_b + m_b * sum_b).
// Types with 32-element blocks only (Q4_0, Q4_1, Q8_0).
Status MatMulInt8BlocksRef(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes,
                           const int8_t* q, const float* steps, int n_tokens, std::span<double> out);

}  // namespace bitfleet::kernels::ref

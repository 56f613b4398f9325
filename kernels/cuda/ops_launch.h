// Launchers of the CUDA elementwise ops of the forward pass: the GPU counterparts of
// kernels/ops.h (same shapes and semantics). Contracts as in kernels/cuda/matmul_launch.h:
// device pointers, queued on `stream`, launch status returned, budgets in docs/cuda.md.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace bitfleet::kernels::cuda {

// y = x / sqrt(mean(x^2) + eps) * weight for n_tokens rows of `dim` (sums in double). In place
// allowed.
cudaError_t LaunchRmsNorm(const float* x, const float* weight, int n_tokens, int dim, float eps, float* y,
                          cudaStream_t stream);
// sum_sq[t] = sum_i x[t, i]^2: the partial that tensor parallelism all-reduces for BitNet's
// sub-norms.
cudaError_t LaunchSumSquares(const float* x, int n_tokens, int dim, float* sum_sq, cudaStream_t stream);
// y = x / sqrt(sum_sq / full_dim + eps) * weight, given the full row's (all-reduced) sum.
cudaError_t LaunchRmsNormWithSumSquares(const float* x, const float* weight, int n_tokens, int dim,
                                        const float* sum_sq, int full_dim, float eps, float* y,
                                        cudaStream_t stream);

// RMSNorm fused with the int8 quantization of its output, bit for bit the unfused sequence of
// LaunchRmsNorm and LaunchQuantizeActivations (per_block false: each token its own absmax) or
// LaunchQuantizeActivationBlocks (per_block true: each 32-column block its own; pass
// ActScalingFor of the weights the output multiplies, as ActivationView::per_block). Writes q,
// absmax, the per-32 block sums and the block steps as those launchers do (`stride` a multiple
// of 256, q zero past dim; every output required). The Add variant first does x += add (written
// back, as LaunchAdd); the Relu2Mul variant normalizes relu(gate)^2 * up (as LaunchRelu2Mul)
// without storing it. Tensor parallelism needs the sums of squares (and, per token, the absmax)
// all-reduced between the steps: use the unfused launchers there.
cudaError_t LaunchRmsNormQuantize(const float* x, const float* weight, int n_tokens, int dim, float eps,
                                  bool per_block, int64_t stride, int8_t* q, float* absmax, int32_t* sums,
                                  float* block_steps, cudaStream_t stream);
cudaError_t LaunchAddRmsNormQuantize(float* x, const float* add, const float* weight, int n_tokens, int dim, float eps,
                                     bool per_block, int64_t stride, int8_t* q, float* absmax, int32_t* sums,
                                     float* block_steps, cudaStream_t stream);
cudaError_t LaunchRelu2MulRmsNormQuantize(const float* gate, const float* up, const float* weight, int n_tokens,
                                          int dim, float eps, bool per_block, int64_t stride, int8_t* q,
                                          float* absmax, int32_t* sums, float* block_steps, cudaStream_t stream);

// Rotary embedding in place on n_tokens × n_heads × head_dim, rotating the first rot_dim dims of
// each head; positions[t] per token (device). neox=false: pairs (2i, 2i+1); neox=true: (i, i +
// rot_dim/2). theta_i = pos * base^(-2i/rot_dim), evaluated in double.
cudaError_t LaunchRope(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim, int rot_dim,
                       float freq_base, bool neox, cudaStream_t stream);

// out = silu(gate) * up; out = relu(gate)^2 * up (bit-exact with the reference); out = a + b.
// Any of the outputs may alias an input.
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);
cudaError_t LaunchRelu2Mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);
cudaError_t LaunchAdd(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream);
// x[t, i] += bias[i] for n_tokens rows of dim (one rounded sum each, as on the CPU): a
// projection's bias (Qwen2's Q, K and V). INVALID_VALUE for dim <= 0 or n_tokens < 0.
cudaError_t LaunchAddRowBias(float* x, const float* bias, int n_tokens, int dim, cudaStream_t stream);
// x *= scale in place (one rounded product: a projection's per-tensor scale, as on the CPU).
cudaError_t LaunchScale(float* x, int64_t n, float scale, cudaStream_t stream);
// dst row r = src row rows[r] for r < n_rows (rows of row_floats floats; `rows` in device
// memory, each a valid row of src; dst must not overlap src). One launch whatever the rows, so a
// captured graph replays it for any rows uploaded before the replay.
cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int n_rows, int64_t row_floats, float* dst,
                             cudaStream_t stream);

}  // namespace bitfleet::kernels::cuda

// The public matmul and op entry points with an explicit variant table, so tests and benchmarks
// can run every variant the CPU supports. The functions of kernels/matmul.h and kernels/ops.h
// call these with ActiveKernels(). Internal to kernels/ (plus tests and `bitfleet bench`).
#pragma once

#include "kernels/cpu/kernel_table.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace bitfleet::kernels::cpu {

void ComputeAbsMaxWith(const CpuKernels& k, const float* x, int n_tokens, uint64_t cols, float* absmax);
// pool may be null (the calling thread does every row). absmax: per token, the tokens'
// absmax (may alias out->absmax); per block, unused (may be null).
void QuantizeActivationsWith(const CpuKernels& k, const float* x, int n_tokens, uint64_t cols, ActScaling scaling,
                             const float* absmax, QuantizedActivations* out, ThreadPool* pool);
void MatMulQuantizedWith(const CpuKernels& k, const PackedWeight& w, const QuantizedActivations& x, float* out,
                         ThreadPool& pool);
void MatMulQuantizedGroupWith(const CpuKernels& k, std::span<const QuantMatMulJob> jobs,
                              const QuantizedActivations& x, ThreadPool& pool);
void MatMulWith(const CpuKernels& k, const PackedWeight& w, const float* x, int n_tokens, float* out, ThreadPool& pool,
                QuantizedActivations* scratch);

void RmsNormWith(const CpuKernels& k, const float* x, const float* weight, int n_tokens, int dim, float eps, float* y);
void SumSquaresWith(const CpuKernels& k, const float* x, int n_tokens, int dim, float* sum_sq);
void RmsNormWithSumSquaresWith(const CpuKernels& k, const float* x, const float* weight, int n_tokens, int dim,
                               const float* sum_sq, int full_dim, float eps, float* y);
void SoftmaxWith(const CpuKernels& k, float* x, int n);
void SiluMulWith(const CpuKernels& k, const float* gate, const float* up, int64_t n, float* out);
void Relu2MulWith(const CpuKernels& k, const float* gate, const float* up, int64_t n, float* out);
void WriteKvWith(const CpuKernels& k, const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens,
                 const float* kk, const float* v);
// pool may be null (single thread); scratch as in kernels/ops.h (per thread of the pool).
void AttentionPagedWith(const CpuKernels& k, const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                        const int32_t* block_table, int pos0, float scale, float* out, float* scratch,
                        ThreadPool* pool);
// kernels/ops.h AttentionSharedPrefix; pool may be null (single thread).
void AttentionSharedPrefixWith(const CpuKernels& k, const float* const* q, int n_seqs, int n_heads, const PagedKv& kv,
                               const int32_t* const* tables, const int32_t* pos, int shared_positions, float scale,
                               float* const* out, ThreadPool* pool);

}  // namespace bitfleet::kernels::cpu

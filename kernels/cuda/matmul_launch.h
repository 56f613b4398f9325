// Launchers of the CUDA weight-matrix products and of the int8 activation quantization they
// consume: the GPU counterparts of kernels/matmul.h. Plain C++ over the CUDA runtime API (no
// abseil), so nvcc-compiled kernels and host code share it; kernels/cuda/cuda_matmul.h wraps
// them with owned buffers and Status.
//
// Contracts, common to every launcher here:
// - All pointers are device pointers; work is queued on `stream` and nothing synchronizes.
// - The return value is the launch status (cudaGetLastError after the launch), or
//   cudaErrorInvalidValue for shapes a kernel does not support. Execution errors surface at the
//   next synchronizing call, as usual in CUDA.
// - Results match the CPU references of kernels/ref/ within docs/cuda.md's budgets:
//   activation quantization bit for bit, matmuls within 1e-5 of the dot product's magnitude.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/weight_layout.h"

namespace bitfleet::kernels::cuda {

// A quantized weight in the layout of kernels/cuda/weight_layout.h.
struct QuantWeightView {
  QuantFormat format = QuantFormat::kTernary;
  const uint8_t* codes = nullptr;   // n_groups × n_steps × 512 bytes, 16-byte aligned
  const float* scales = nullptr;    // ternary: float per (row, 256-block)
  const uint16_t* half_d = nullptr; // Q4_0/Q4_1/Q8_0: fp16 d per (row, 32-block)
  const uint16_t* half_m = nullptr; // Q4_1: fp16 m per (row, 32-block)
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t n_groups = 0;  // ceil(rows / 8)
  int64_t n_steps = 0;   // ceil(cols / StepElems)
  int64_t n_blocks = 0;  // n_steps * BlocksPerStep
};

// int8 activations (kernels/matmul.h QuantizedActivations, on the device), quantized per token
// or per 32-column block (kernels/matmul.h ActScaling; `per_block` says which).
// - Ternary kernels scale each token's row by absmax / 127 and take per-token activations only
//   (the launchers refuse per-block ones).
// - Q4_0 / Q4_1 / Q8_0 kernels read only block_steps, never absmax: per-block activations have
//   one step per block, per-token ones repeat absmax / 127 in every block, so these kernels take
//   either kind with one code path (as the CPU kernels, kernels/cpu/kernel_table.h ActView).
struct ActivationView {
  const int8_t* q = nullptr;      // n_tokens × stride; zero past cols; 16-byte aligned rows
  const float* absmax = nullptr;  // n_tokens; per token: the step is absmax / 127; per block: the row's max
  const int32_t* sums = nullptr;  // n_tokens × stride / 32: per-32 block sums of q
  // n_tokens × stride / 32, zero past cols: the dequantization step of each 32-column block
  // (16-byte aligned).
  const float* block_steps = nullptr;
  int64_t cols = 0;
  int64_t stride = 0;             // multiple of 256
  int n_tokens = 0;
  bool per_block = false;         // block_steps differ within a token (Q4/Q8 weights only)
};

enum class FloatFormat : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// A float weight: rows of `cols` values, `row_stride` elements apart (a multiple of 8, the
// padding zero-filled), 16-byte aligned.
struct FloatWeightView {
  FloatFormat format = FloatFormat::kF16;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
};

// Row stride of ActivationView for `cols` columns.
inline int64_t ActivationStride(int64_t cols) { return (cols + 255) / 256 * 256; }

// Whether x suits the kernels of weight format f (the scaling and the arrays they read).
inline bool ActivationsFit(QuantFormat f, const ActivationView& x) {
  return f == QuantFormat::kTernary ? !x.per_block && x.absmax != nullptr : x.block_steps != nullptr;
}

// Quantizes x (n_tokens × cols, dense floats) per token: q = clamp(round_half_even(x * (127 /
// absmax)), ±127), NaN -> 0, zero-filling q up to `stride`, and writes absmax, the per-32 block
// sums and the block steps (absmax / 127 in every block that holds a column, zero past cols).
// absmax_in null: each token's own max |x| (written to absmax_out); otherwise the given values
// (for example all-reduced across tensor-parallel ranks), copied to absmax_out. Every output
// is required (cudaErrorInvalidValue for a null one).
cudaError_t LaunchQuantizeActivations(const float* x, int n_tokens, int64_t cols, const float* absmax_in,
                                      int64_t stride, int8_t* q, float* absmax_out, int32_t* sums,
                                      float* block_steps, cudaStream_t stream);

// Quantizes x per 32-column block, bit for bit as ref::QuantizeActivationBlocksRef: each block
// [32b, 32b + 32) ∩ [0, cols) with its own absmax a (NaN ignored), q = clamp(round_half_even(x *
// inv)), inv = a > 0 ? 127 / a : 0 (float), NaN -> 0, and block_steps[b] = a / 127. Zero-fills
// q, the sums and the steps up to `stride`; absmax_out gets each row's max (for reports). Every
// output is required.
cudaError_t LaunchQuantizeActivationBlocks(const float* x, int n_tokens, int64_t cols, int64_t stride, int8_t* q,
                                           float* absmax_out, int32_t* sums, float* block_steps,
                                           cudaStream_t stream);

// Tokens up to which LaunchQuantMatMul takes the dp4a mat-vec path (memory-bound decode); larger
// batches take the int8 tensor-core path.
inline constexpr int kMatVecMaxTokens = 4;

// out[t * w.rows + r] = sum_c W[r, c] * x̂[t, c] for every token of x (x.cols == w.cols), with
// x̂ = q × the step of its token (ternary) or of its (token, block) (Q4/Q8). cudaErrorInvalidValue
// for a ternary W with per-block x, or a Q4/Q8 W with no block_steps.
// Chooses the mat-vec kernel (n_tokens <= kMatVecMaxTokens) or the tensor-core kernel.
cudaError_t LaunchQuantMatMul(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream);
// The two paths, callable directly (tests and benchmarks compare them).
cudaError_t LaunchQuantMatVec(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream);

// A chain of single-token mat-vecs run by one cooperative launch with a grid-wide barrier
// between links (a link may read what an earlier one wrote): the kernel boundaries of a decode
// layer's mat-vecs, which dominate their cost at 2B shapes (docs/cuda.md, "Measured"), become
// barriers, and each link's weight streams in during the link before it. `links` is device
// memory, `count` links, every one of `format` and valid by QuantMatVecLinkValid (one token,
// matching columns, ActivationsFit; the launcher cannot read them: check on the host). Each
// link's activations carry its weight's scaling (Q4/Q8 block steps, ternary absmax); outputs as
// LaunchQuantMatVec's, bit for bit.
struct MatVecChainLink {
  QuantWeightView w;
  ActivationView x;
  float* out = nullptr;
};
bool QuantMatVecLinkValid(const MatVecChainLink& link, QuantFormat format);
cudaError_t LaunchQuantMatVecChain(QuantFormat format, const MatVecChainLink* links, int count, cudaStream_t stream);

// How the mat-vec overlaps its weight stream with the kernels queued before it (docs/cuda.md,
// "Quantized mat-vec"): launched as a programmatic dependent launch (kernels/cuda/launch_options.h),
// its blocks start during the previous kernel, and the first `prefetch_blocks` blocks ask L2 for
// the whole weight before they wait for the activations. The defaults are the measured best;
// benchmarks change them to compare.
enum class WeightPrefetch : int { kNone = 0, kLines = 1, kBulk = 2 };  // kBulk: sm_90 bulk copies
// The single-token kernel (experiments until measured on a device, docs/cuda.md); all give the
// same bits:
// - kGeneral: the dp4a kernel that also serves 2..kMatVecMaxTokens tokens and the chains;
// - kLean: its lanes and sums with the addressing hoisted out of the step;
// - kTensorCore: ternary weights through int8 mma.sync, 16 rows per warp (other formats take
//   kGeneral).
enum class MatVecKernel : int { kGeneral = 0, kLean = 1, kTensorCore = 2 };
struct QuantMatVecOptions {
  WeightPrefetch prefetch = WeightPrefetch::kBulk;
  int prefetch_blocks = 128;
  MatVecKernel kernel = MatVecKernel::kGeneral;
};
// Process-wide; set before launches are queued (not synchronized with launches in flight).
void SetQuantMatVecOptions(const QuantMatVecOptions& options);
QuantMatVecOptions GetQuantMatVecOptions();
cudaError_t LaunchQuantMatMulMma(const QuantWeightView& w, const ActivationView& x, float* out, cudaStream_t stream);

// Tokens up to which LaunchFloatMatMul takes the CUDA-core mat-vec path; F16/BF16 weights with
// more tokens take the TF32 tensor-core path (activations split in two TF32 halves, so the
// result stays within float-accumulation accuracy). F32 weights always take the mat-vec path.
inline constexpr int kFloatMatVecMaxTokens = 4;

// out[t * w.rows + r] = sum_c W[r, c] * x[t * w.cols + c] with float activations (F32/F16/BF16
// weights; float accumulation).
cudaError_t LaunchFloatMatMul(const FloatWeightView& w, const float* x, int n_tokens, float* out,
                              cudaStream_t stream);

}  // namespace bitfleet::kernels::cuda

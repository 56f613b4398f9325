// Weight-matrix products for every weight type, in the runtime layout the CPU kernels prefer.
//
// Contract (DESIGN.md §4, §5; docs/kernels.md has layouts and error budgets):
// - A PackedWeight is built once at load time from a tensor's GGUF bytes (repacking allowed)
//   and is immutable afterwards, so many threads may read it.
// - Quantized types multiply against activations quantized to int8 with symmetric absmax
//   scales (W8A8, W4A8, W2A8), at the granularity ActScalingFor gives:
//   - ternary (TQ1_0, TQ2_0, I2_S): one scale per token, BitNet b1.58's trained recipe. The
//     absmax is an explicit input so a row-parallel (K-split) matmul under tensor parallelism
//     can use the all-reduced absmax of the full row and reproduce TP=1 exactly.
//   - Q4_0, Q4_1, Q8_0: one scale per 32-column block, as llama.cpp's Q8_1. One scale per token
//     lets a single outlier coarsen a whole row: on SmolLM2-135M Q4_1 it cost KL 0.043 and
//     86.7% top-1 agreement against the F32 weights, per block 0.0036 and 96.3%
//     (docs/kernels.md). A K-split falls on block boundaries, so each rank's blocks are the
//     TP=1 blocks and need no all-reduce.
// - F32/F16/BF16 weights multiply against float activations (no activation quantization).
// - Every variant (scalar, AVX2, AVX-512/VNNI) computes the same function within a per-type
//   error budget; the references live in kernels/ref/matmul_ref.h.
// - The per-token path does not allocate once QuantizedActivations::Reserve was called with
//   the largest shape.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "core/dtype.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace bitfleet::kernels {

// Owning pointer to a 64-byte aligned array from AllocateAligned (freed with std::free).
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using AlignedArray = std::unique_ptr<T[], AlignedFree>;

// `bytes` bytes (rounded up to 64), 64-byte aligned and zero-filled, to free with std::free.
// Buffers of 2 MiB and more are 2 MiB aligned and asked to be backed by transparent huge pages
// (madvise; a no-op where the kernel does not offer them): a decode step streams every weight
// once, and 4 KiB pages would cost a TLB miss per page (measured: Q4_0 decode +4%). Aborts on
// out-of-memory, as operator new would. With `zero_fill` false only the rounding past `bytes` is
// zeroed (a vector load may read into it): for a writer that fills every byte itself, so that
// each page is first touched, and cleared by the kernel, on the thread that writes it (packing a
// 2B-shaped model over a thread pool: load -15%) instead of serially here.
void* AllocateAlignedBytes(uint64_t bytes, bool zero_fill = true);

// `count` elements of T (trivial types), as AllocateAlignedBytes.
template <typename T>
AlignedArray<T> AllocateAligned(uint64_t count) {
  return AlignedArray<T>(static_cast<T*>(AllocateAlignedBytes((count == 0 ? 1 : count) * sizeof(T))));
}
// The same without the zero fill: every element must be written before it is read.
template <typename T>
AlignedArray<T> AllocateUnfilled(uint64_t count) {
  return AlignedArray<T>(static_cast<T*>(AllocateAlignedBytes((count == 0 ? 1 : count) * sizeof(T), false)));
}

// A weight matrix W of `rows` output features × `cols` input features (GGUF shape
// [cols, rows]), stored in a kernel layout. Opaque to callers.
class PackedWeight {
 public:
  virtual ~PackedWeight() = default;
  virtual DType type() const = 0;
  virtual uint64_t rows() const = 0;
  virtual uint64_t cols() const = 0;
  // Resident bytes of the packed form (for memory reports).
  virtual uint64_t bytes() const = 0;
  // Bytes of the original GGUF encoding (what a decode step reads per token, for GB/s).
  virtual uint64_t stream_bytes() const = 0;
};

// Repacks `rows` rows of `cols` weights given in GGUF bytes. `bytes` holds exactly the tensor,
// TensorBytes(type, cols, rows * cols) bytes, including the I2_S 32-byte tail (a tensor-parallel
// shard of an I2_S tensor passes its rows' codes followed by the tensor's tail). The bytes are
// copied; the span need not outlive the call. Errors: InvalidArgument for a size mismatch or
// zero/oversized dims, Unimplemented for types without a kernel (I8, I16, I32, F64).
// With `pool`, the rows are repacked by its threads (the same bytes as without: loading a
// model's weights is mostly this repacking); the pool must not be running another job.
StatusOr<std::unique_ptr<PackedWeight>> PackWeight(DType type, uint64_t cols, uint64_t rows,
                                                   std::span<const uint8_t> bytes, ThreadPool* pool = nullptr);

// How activations are scaled when quantized to int8 (see the contract above).
enum class ActScaling {
  kPerToken,  // one absmax per token
  kPerBlock,  // one absmax per 32-column block of each token
};

// The scaling the kernels of weight type `type` multiply against: kPerBlock for Q4_0, Q4_1 and
// Q8_0, kPerToken for the ternary types (and for float types, which take float activations).
ActScaling ActScalingFor(DType type);

// Activations of `n_tokens` tokens × `cols`, quantized to int8 over spans of columns (a token's
// row, or each 32-column block of it) with the span's absmax a: q = round_half_even(x * (127 /
// a)), clamped to [-127, 127]; dequantized value = q * (a / 127). a == 0 gives q == 0. Rows of
// q are `stride` bytes apart (cols rounded up to 256, the tail zero-filled so kernels may read
// whole 256-blocks). Owned scratch: QuantizeActivations grows it when needed, Reserve sizes it
// up front so the per-token path does not allocate.
struct QuantizedActivations {
  int n_tokens = 0;
  uint64_t cols = 0;
  uint64_t stride = 0;          // bytes between token rows of q; multiple of 256
  ActScaling scaling = ActScaling::kPerToken;
  AlignedArray<int8_t> q;       // n_tokens × stride
  AlignedArray<float> absmax;   // n_tokens: the row's absmax (per token: the one the steps use)
  AlignedArray<int32_t> sums;   // n_tokens × (stride / 32): per-32 block sums of q
  AlignedArray<float> sums256;  // n_tokens × (stride / 256): per-256 block sums of q
  // n_tokens × (stride / 32), zero past cols: each block's dequantization step (per token: the
  // token's absmax / 127 in every block), and float(sums) × step.
  AlignedArray<float> block_steps;
  AlignedArray<float> scaled_sums;
  uint64_t capacity = 0;        // bytes of q
  int token_capacity = 0;
  // A second copy of q in the operand order of AMX tile multiplies, with block sums per token
  // tile, made by QuantizeActivations for batches on CPUs with AMX (internal to the kernels;
  // `tiled` says whether the copy matches q).
  AlignedArray<int8_t> tiles;
  AlignedArray<int32_t> tile_sums;
  AlignedArray<int32_t> token_sums;
  AlignedArray<float> tile_steps;
  uint64_t tiles_capacity = 0;  // bytes of tiles
  int tile_token_capacity = 0;
  bool tiled = false;
  // Sizes every buffer for up to max_tokens × max_cols, including the AMX copy when the
  // chosen CPU variant makes one.
  void Reserve(int max_tokens, uint64_t max_cols);

  // Row stride used for `cols` columns.
  static uint64_t StrideFor(uint64_t cols) { return (cols + 255) / 256 * 256; }
};

// absmax[t] = max_c |x[t*cols + c]| for each token.
void ComputeAbsMax(const float* x, int n_tokens, uint64_t cols, float* absmax);

// Quantizes x (n_tokens × cols, dense) with the given per-token absmax (which may come from an
// all-reduce and may exceed the local max; ActScaling::kPerToken), filling every array of
// `out`.
void QuantizeActivations(const float* x, int n_tokens, uint64_t cols, const float* absmax, QuantizedActivations* out);
// The same with the tokens split over `pool` (from kMinParallelRowTokens tokens, kernels/ops.h);
// the result is identical.
void QuantizeActivations(const float* x, int n_tokens, uint64_t cols, const float* absmax, QuantizedActivations* out,
                         ThreadPool& pool);

// Quantizes x (n_tokens × cols, dense) per 32-column block, each block with its own absmax
// (ActScaling::kPerBlock), filling every array of `out`. Pooled as QuantizeActivations.
void QuantizeActivationsPerBlock(const float* x, int n_tokens, uint64_t cols, QuantizedActivations* out);
void QuantizeActivationsPerBlock(const float* x, int n_tokens, uint64_t cols, QuantizedActivations* out,
                                 ThreadPool& pool);

// out[t*rows + r] = sum_c W[r, c] * x[t, c] for quantized W, using the int8 activations.
// Parallel over rows on `pool`. out must hold n_tokens × rows floats. Precondition: x.cols ==
// w.cols(), W is a quantized type, and a ternary W has per-token activations (Q4/Q8 kernels
// take either scaling); a violation is logged and writes NaN to out.
void MatMulQuantized(const PackedWeight& w, const QuantizedActivations& x, float* out, ThreadPool& pool);

// One weight and its output for MatMulQuantizedGroup.
struct QuantMatMulJob {
  const PackedWeight* weight;
  float* out;  // n_tokens × weight->rows()
};

// MatMulQuantized for several weights of the same input (Q, K and V; gate and up) in one
// parallel pass: their rows are split over the pool together, so the threads meet once
// instead of once per weight, and the short tails of small matrices do not leave a thread
// idle. Results are identical to one MatMulQuantized per job. At most 8 jobs.
void MatMulQuantizedGroup(std::span<const QuantMatMulJob> jobs, const QuantizedActivations& x, ThreadPool& pool);

// The same for float activations x (n_tokens × cols, dense). For quantized W this quantizes x
// into `scratch` first (at W's ActScalingFor, absmax of x itself); scratch may be null for
// float W, and
// for quantized W a null scratch uses a per-thread buffer (which allocates on growth).
void MatMul(const PackedWeight& w, const float* x, int n_tokens, float* out, ThreadPool& pool,
            QuantizedActivations* scratch);

// Name of the variant the dispatcher chose for this CPU ("avx512vnni", "avx2", "scalar").
std::string CpuVariantName();

}  // namespace bitfleet::kernels

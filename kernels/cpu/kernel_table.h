// The function table one CPU variant (scalar, AVX2, AVX-512 VNNI) provides, and the plain views
// its kernels read. Internal to kernels/.
//
// Why plain views: the SIMD translation units are compiled with ISA flags (-mavx2, -mavx512f...).
// Any inline function or template they instantiate from a shared header (std::unique_ptr::get,
// std::min, a header inline) becomes a COMDAT symbol that the linker may pick for the whole
// binary, putting AVX instructions into the scalar path. So SIMD files include only this header
// and <immintrin.h>, use internal-linkage helpers, and take raw pointers.
#pragma once

#include <cstdint>

namespace bitfleet::kernels::cpu {

enum class CpuVariant : int { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2, kAmx = 3 };

// A packed weight, read-only (layouts: kernels/cpu/packed_weight.h, docs/kernels.md).
struct WeightView {
  const uint8_t* data = nullptr;     // codes: `row_bytes` per row, rows 64-byte aligned
  const float* scales = nullptr;     // ternary: rows × blocks float scale per 256-block
  const uint16_t* half_d = nullptr;  // Q4_0/Q4_1/Q8_0: rows × blocks fp16 scale per 32-block
  const uint16_t* half_m = nullptr;  // Q4_1: rows × blocks fp16 min per 32-block
  uint64_t rows = 0;
  uint64_t cols = 0;       // logical columns
  uint64_t row_bytes = 0;  // bytes between rows of `data`
  uint64_t blocks = 0;     // scale blocks per row (padded; padded blocks have scale 0)
  // Ternary only: one scale per row when every block of the row that holds a nonzero weight has
  // the same scale (BitNet models: one scale per tensor), else null. A block of zero weights
  // (codes 1) adds the same to the code sum and to the zero-point correction, so it may take
  // any scale. With it a kernel may sum codes × activations over the whole row in integers.
  const float* row_scales = nullptr;
};

// Quantized activations, read-only (see QuantizedActivations in kernels/matmul.h).
struct ActView {
  const int8_t* q = nullptr;       // n_tokens × stride, zero past cols
  const float* absmax = nullptr;   // per token; the dequantization step is absmax / 127.0f
  const int32_t* sums = nullptr;   // n_tokens × (stride / 32)
  const float* sums256 = nullptr;  // n_tokens × (stride / 256)
  uint64_t stride = 0;
  int n_tokens = 0;
  // AMX operand copy (kAmxTileTokens-token tiles, see tile_activations below), or null when the
  // activations were not tiled (then the variant's non-AMX path runs). Of the sums, the AMX
  // kernels read tile_sums for Q4_1's min term and token_sums for the ternary zero point (Q8_0
  // and Q4_0 multiply signed codes and need neither).
  const int8_t* tiles = nullptr;
  const int32_t* tile_sums = nullptr;   // per token tile: (stride / 32) × 16 block sums
  const int32_t* token_sums = nullptr;  // per token (tiles × 16, zero past n_tokens): sum of q
  // Q4_0 / Q4_1 / Q8_0 kernels scale per 32-column block and read only these, never absmax:
  // - block_steps: n_tokens × (stride / 32), the dequantization step of each block (zero past
  //   cols). Per-block activations have one step per block; per-token activations repeat
  //   absmax / 127 in every block, so these kernels take either kind.
  // - scaled_sums: the same shape, float(sums[b]) * block_steps[b], the block's activation sum
  //   in real units (for the zero-point and min terms).
  // - tile_steps: with `tiles`, block_steps per token tile transposed like tile_sums,
  //   (stride / 32) × 16 floats per tile, zero for missing tokens.
  // Ternary kernels read absmax and sums256 and take per-token activations only
  // (MatMulQuantized checks).
  const float* block_steps = nullptr;
  const float* scaled_sums = nullptr;
  const float* tile_steps = nullptr;
};

// Tokens per AMX tile (the N dimension of one tile multiply).
inline constexpr int kAmxTileTokens = 16;
// Batches of at least this many tokens take the AMX path where the variant has one. The AMX
// path costs about the same for 1 to 16 tokens (unpacking the weight codes dominates until the
// tiles fill), the VNNI path grows with the tokens; they cross near 8 (2048x2048, one thread,
// cold: TQ2_0 200 vs 216 µs, Q4_0 434 vs 445, Q8_0 665 vs 595 at 8 tokens; at 16 AMX is 2x).
inline constexpr int kAmxMinTokens = 10;

// out[t * out_stride + r] for r in [row_begin, row_end), every token. out_stride = w.rows.
using QuantMatMulFn = void (*)(const WeightView& w, int64_t row_begin, int64_t row_end, const ActView& x, float* out);
// Float activations x: n_tokens × w.cols dense.
using FloatMatMulFn = void (*)(const WeightView& w, int64_t row_begin, int64_t row_end, const float* x, int n_tokens,
                               float* out);

struct CpuKernels {
  CpuVariant variant;
  const char* name;
  // ---- activations ----
  float (*abs_max)(const float* x, uint64_t n);
  // q[i] = clamp(round_half_even(x[i] * inv_scale), ±127) (NaN -> 0) for i < n, and
  // sums[b] = sum of q over [32b, 32b + 32) ∩ [0, n) for b < ceil(n / 32).
  void (*quantize_row)(const float* x, uint64_t n, float inv_scale, int8_t* q, int32_t* sums);
  // ---- matmuls per runtime layout ----
  QuantMatMulFn ternary;
  QuantMatMulFn q4_0;
  QuantMatMulFn q4_1;
  QuantMatMulFn q8_0;
  FloatMatMulFn f32;
  FloatMatMulFn f16;
  FloatMatMulFn bf16;
  // ---- elementwise and attention helpers ----
  float (*sum_squares)(const float* x, int64_t n);
  void (*scale_mul)(const float* x, const float* w, float s, int64_t n, float* y);  // y = x * s * w
  // Attention over a run of n_keys cached positions (f16 rows `*_stride` elements apart) for nq
  // query heads that share the KV head (q: nq × hd, contiguous):
  // s[i * n_keys + j] = scale * dot(q_i, k_j).
  void (*qk_f16)(const float* q, int nq, int hd, const uint16_t* k, int64_t k_stride, int n_keys, float scale,
                 float* s);
  // acc[i * hd + d] += sum_j p[i * n_keys + j] * v_j[d].
  void (*pv_f16)(const float* p, int nq, int n_keys, const uint16_t* v, int64_t v_stride, int hd, float* acc);
  void (*f32_to_f16)(const float* x, int64_t n, uint16_t* y);  // round to nearest even
  // An int8 KV row as f16: y[i] = f16(float(q[i]) * steps[i / group]) (round to nearest even), the
  // same bits in every variant. group > 0.
  void (*dequant_i8_f16)(const int8_t* q, const float* steps, int64_t n, int group, uint16_t* y);
  // x[i] = exp(x[i] - max) in place; returns the sum (float).
  float (*exp_shift_sum)(float* x, int64_t n, float max);
  void (*silu_mul)(const float* gate, const float* up, int64_t n, float* out);
  void (*relu2_mul)(const float* gate, const float* up, int64_t n, float* out);
  // The lowest index holding the largest value of x[0, n), NaNs skipped; 0 when there is none
  // (n == 0, every value NaN). n < 2^31.
  int64_t (*arg_max)(const float* x, int64_t n);
  // Prefill attention over one run of cached positions, or null (then prefill takes the per-token
  // qk_f16 / pv_f16 path): folds the keys j0 .. j0 + n_keys - 1 (n_keys <= 16; K and V rows
  // kv_stride elements apart) into the online-softmax state of n_rows query rows (q + r * hd)
  // that share the KV head. Row r sees the keys j < limit[r], possibly none of the run; its
  // running max m[r] (-inf before its first key), sum l[r] and accumulator acc + r * hd are
  // updated as AttendRange does. hd % 16 == 0 and hd <= 256.
  void (*attend_run)(const float* q, int n_rows, int hd, const int32_t* limit, const uint16_t* k, const uint16_t* v,
                     int64_t kv_stride, int j0, int n_keys, float scale, float* m, float* l, float* acc);
  // attend_run on an int8 cache's rows in place (null without attend_run; without it an int8
  // prefill takes the per-token path): codes and steps as qk_i8 reads them; the same bits as
  // attend_run on the rows dequant_i8_f16 writes.
  void (*attend_run_i8)(const float* q, int n_rows, int hd, const int32_t* limit, const int8_t* k,
                        const float* k_steps, const int8_t* v, const float* v_steps, int64_t kv_stride, int group,
                        int j0, int n_keys, float scale, float* m, float* l, float* acc);
  // qk_f16 and pv_f16 on an int8 cache's rows in place, or null (then the rows are dequantized
  // into a buffer first): codes `*_stride` elements apart, each row's steps `*_stride / group`
  // apart (element d of a row uses its row's step d / group; group is KvInt8Group(hd)). The
  // results are bit for bit those of dequant_i8_f16 followed by qk_f16 / pv_f16 of the same
  // variant: every element is read as the f16 rounding of code × step.
  void (*qk_i8)(const float* q, int nq, int hd, const int8_t* k, const float* k_steps, int64_t k_stride, int group,
                int n_keys, float scale, float* s);
  void (*pv_i8)(const float* p, int nq, int n_keys, const int8_t* v, const float* v_steps, int64_t v_stride,
                int group, int hd, float* acc);
  // ---- AMX operands (null in variants without AMX) ----
  // Copies q (n_tokens × stride, stride a multiple of 256) into tile order: for token tile tt
  // (tokens 16 tt .. 16 tt + 15, missing tokens zero) and 64-column chunk kc, a 16 × 64-byte
  // tile at tiles + (tt * stride / 64 + kc) * 1024 whose row r holds, for each token n, the
  // four bytes q[16 tt + n][64 kc + 4 r .. + 3] (the B operand layout of tdpbusd). Also writes
  // per tile the 32-block sums transposed (tile_sums + (tt * stride / 32 + b) * 16 + n) and
  // each token's total (token_sums[16 tt + n]), and the block steps transposed the same way
  // (tile_steps + (tt * stride / 32 + b) * 16 + n, from block_steps n_tokens × stride / 32).
  void (*tile_activations)(const int8_t* q, const int32_t* sums, const float* block_steps, int n_tokens,
                           uint64_t stride, int8_t* tiles, int32_t* tile_sums, int32_t* token_sums,
                           float* tile_steps);
};

// Tables, defined in kernels/cpu/dispatch.cc.
const CpuKernels& ScalarKernels();
// nullptr when the build has no such variant or this CPU cannot run it.
const CpuKernels* KernelsFor(CpuVariant variant);
// The variant chosen once at start-up (best supported, lowered by BITFLEET_CPU_VARIANT).
const CpuKernels& ActiveKernels();

}  // namespace bitfleet::kernels::cpu

// Declarations of the functions each variant file defines, one namespace per variant
// (scalar / avx2 / avx512), so dispatch.cc can assemble the tables. Internal to kernels/cpu.
#pragma once

#include "kernels/cpu/kernel_table.h"

#define BITFLEET_DECLARE_CPU_VARIANT(ns)                                                                              \
  namespace ns {                                                                                                      \
  float AbsMax(const float* x, uint64_t n);                                                                           \
  void QuantizeRow(const float* x, uint64_t n, float inv_scale, int8_t* q, int32_t* sums);                            \
  void MatMulTernary(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);                      \
  void MatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);                         \
  void MatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);                         \
  void MatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);                         \
  void MatMulF32(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out);                     \
  void MatMulF16(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out);                     \
  void MatMulBf16(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out);                    \
  float SumSquares(const float* x, int64_t n);                                                                        \
  void ScaleMul(const float* x, const float* w, float s, int64_t n, float* y);                                        \
  void QkF16(const float* q, int nq, int hd, const uint16_t* k, int64_t k_stride, int n_keys, float scale, float* s); \
  void PvF16(const float* p, int nq, int n_keys, const uint16_t* v, int64_t v_stride, int hd, float* acc);            \
  void F32ToF16(const float* x, int64_t n, uint16_t* y);                                                              \
  void DequantI8F16(const int8_t* q, const float* steps, int64_t n, int group, uint16_t* y);                          \
  float ExpShiftSum(float* x, int64_t n, float max);                                                                  \
  void SiluMul(const float* gate, const float* up, int64_t n, float* out);                                            \
  void Relu2Mul(const float* gate, const float* up, int64_t n, float* out);                                           \
  int64_t ArgMax(const float* x, int64_t n);                                                                          \
  }

namespace bitfleet::kernels::cpu {
BITFLEET_DECLARE_CPU_VARIANT(scalar)
#if defined(BITFLEET_KERNELS_X86)
BITFLEET_DECLARE_CPU_VARIANT(avx2)
BITFLEET_DECLARE_CPU_VARIANT(avx512)
namespace avx512 {
// The attend_run entry of kernels/cpu/kernel_table.h (avx512_attention.cc).
void AttendRun(const float* q, int n_rows, int hd, const int32_t* limit, const uint16_t* k, const uint16_t* v,
               int64_t kv_stride, int j0, int n_keys, float scale, float* m, float* l, float* acc);
// The attend_run_i8 entry (avx512_attention.cc).
void AttendRunI8(const float* q, int n_rows, int hd, const int32_t* limit, const int8_t* k, const float* k_steps,
                 const int8_t* v, const float* v_steps, int64_t kv_stride, int group, int j0, int n_keys, float scale,
                 float* m, float* l, float* acc);
// The qk_i8 / pv_i8 entries (avx512_ops.cc).
void QkI8(const float* q, int nq, int hd, const int8_t* k, const float* k_steps, int64_t k_stride, int group,
          int n_keys, float scale, float* s);
void PvI8(const float* p, int nq, int n_keys, const int8_t* v, const float* v_steps, int64_t v_stride, int group,
          int hd, float* acc);
}  // namespace avx512
// The qk_i8 / pv_i8 entries of the avx2 variant (avx2_ops.cc).
namespace avx2 {
void QkI8(const float* q, int nq, int hd, const int8_t* k, const float* k_steps, int64_t k_stride, int group,
          int n_keys, float scale, float* s);
void PvI8(const float* p, int nq, int n_keys, const int8_t* v, const float* v_steps, int64_t v_stride, int group,
          int hd, float* acc);
}  // namespace avx2
// The amx variant: avx512's functions except these batch matmuls and the tile copy.
namespace amx {
void MatMulTernary(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
void MatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
void MatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
void MatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
void TileActivations(const int8_t* q, const int32_t* sums, const float* block_steps, int n_tokens, uint64_t stride,
                     int8_t* tiles, int32_t* tile_sums, int32_t* token_sums, float* tile_steps);
}  // namespace amx
#endif
// x86 only, declared outside the guard above because the AVX-512 files that call them are
// compiled without BITFLEET_KERNELS_X86.
namespace avx512 {
// Batch matmuls through 16-row panels (avx512_panel_matmul.cc), rows [r0, r1). Each row's result
// is computed the same way whatever panel it falls in, so it does not depend on the range.
void PanelMatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
void PanelMatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
void PanelMatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
// Ternary rows of at most 65,536 columns (so the uniform-scale sums stay exact as floats).
void PanelMatMulTernary(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out);
}  // namespace avx512

// A per-thread scratch buffer of at least `bytes` bytes, 64-byte aligned, reused by every call
// on the thread (it grows on first use and when a larger one is asked for, so the per-token
// path allocates only while warming up). Defined in matmul_cpu.cc.
uint8_t* AmxScratch(uint64_t bytes);
}  // namespace bitfleet::kernels::cpu

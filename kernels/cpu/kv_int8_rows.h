// Where an int8 KV cache's codes and steps are for a run of rows, as the SIMD attention kernels
// that read the codes in place see them (avx2_ops.cc, avx512_kv_rows.h). Include only from the
// SIMD variant files: the type lives in an anonymous namespace, so no file's copy of its inline
// functions can stand in for another's (kernels/cpu/kernel_table.h on COMDAT).
#pragma once

#include <cstdint>

namespace bitfleet::kernels::cpu {
namespace {

struct Int8RowSteps {
  const int8_t* base;
  const float* steps;   // row 0's
  int64_t stride;       // elements from one row to the next
  int64_t step_stride;  // steps from one row to the next
  int step_shift;       // element d uses step d >> step_shift of its row

  // group is KvInt8Group(hd): 32, or the whole row (then every d < hd shifts to step 0).
  Int8RowSteps(const int8_t* b, const float* s, int64_t st, int group, int hd)
      : base(b), steps(s), stride(st), step_stride(st / group), step_shift(group == hd ? 30 : __builtin_ctz(group)) {}

  const int8_t* Codes(int64_t j, int d) const { return base + j * stride + d; }
  // The step of element d of row j; a vector read from d (a multiple of 8 or 16) lies in one group.
  float Step(int64_t j, int d) const { return steps[j * step_stride + (d >> step_shift)]; }
};

}  // namespace
}  // namespace bitfleet::kernels::cpu

// The last step of the SIMD arg-max kernels (AVX2, AVX-512): from each lane's best value and
// index (index -1: the lane saw no number), the lowest index of the largest value. Plain C++
// with internal linkage (static), so each ISA file compiles its own copy and none can stand in
// for another (see kernels/cpu/kernel_table.h on COMDAT sharing).
#pragma once

#include <cstdint>

namespace bitfleet::kernels::cpu {

// Folds `lanes` (value, index) pairs into *found / *found_value, which start as -1 / any.
static inline void FoldArgMaxLanes(const float* value, const int32_t* index, int lanes, int64_t* found,
                                   float* found_value) {
  for (int l = 0; l < lanes; ++l) {
    if (index[l] < 0) continue;
    if (*found < 0 || value[l] > *found_value || (value[l] == *found_value && index[l] < *found)) {
      *found = index[l];
      *found_value = value[l];
    }
  }
}

}  // namespace bitfleet::kernels::cpu

// Runtime counts as compile-time constants for kernels templated on a small row count.
#pragma once

#include <type_traits>

namespace bitfleet::kernels::cpu {

// Calls fn(std::integral_constant<int, N>{}) with N = min(n, 4) for n >= 1: a kernel templated
// on how many rows it handles (registers per row) runs with that count fixed at compile time.
template <typename Fn>
inline void WithCountUpTo4(int n, Fn&& fn) {
  switch (n >= 4 ? 4 : n) {
    case 4:
      fn(std::integral_constant<int, 4>{});
      break;
    case 3:
      fn(std::integral_constant<int, 3>{});
      break;
    case 2:
      fn(std::integral_constant<int, 2>{});
      break;
    default:
      fn(std::integral_constant<int, 1>{});
      break;
  }
}

}  // namespace bitfleet::kernels::cpu

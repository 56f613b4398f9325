// The rotation of one pair of a head row (RoPE), shared by the RoPE kernel and the fused RoPE +
// KV write so that both compute the same bits. Device code for kernels/cuda/*.cu only.
#pragma once

#include <cstdint>

namespace bitfleet::kernels::cuda {

// Rotates pair i (0 <= i < rot_dim / 2) of the head row xh at position pos in place: neox=false
// pairs (2i, 2i+1), neox=true (i, i + rot_dim/2); theta = pos * base^(-2i/rot_dim), the angle,
// cos/sin and the rotation evaluated in double, as the reference does.
__device__ __forceinline__ void RotatePair(float* xh, int pos, int i, int rot_dim, double freq_base, bool neox) {
  const int half = rot_dim / 2;
  const double theta = pos * pow(freq_base, -2.0 * i / static_cast<double>(rot_dim));
  double s;
  double c;
  sincos(theta, &s, &c);
  const int i0 = neox ? i : 2 * i;
  const int i1 = neox ? i + half : 2 * i + 1;
  const double x0 = xh[i0];
  const double x1 = xh[i1];
  xh[i0] = static_cast<float>(x0 * c - x1 * s);
  xh[i1] = static_cast<float>(x0 * s + x1 * c);
}

}  // namespace bitfleet::kernels::cuda

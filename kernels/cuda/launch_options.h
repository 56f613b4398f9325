// Process-wide launch settings of the CUDA kernels. Plain C++ (host code includes it).
#pragma once

namespace bitfleet::kernels::cuda {

// Whether kernels are queued as programmatic dependent launches where the device supports them
// (compute capability >= 9.0; kernels/cuda/dependent_launch.cuh). On by default. Off, every kernel
// waits for its predecessor to end before it starts, as a plain launch does: results are the same
// bit for bit (benchmarks compare the two to catch a kernel that reads too early).
// Set it before launches are queued; it is not synchronized with launches in flight.
void SetDependentLaunches(bool enabled);
bool DependentLaunchesEnabled();

}  // namespace bitfleet::kernels::cuda

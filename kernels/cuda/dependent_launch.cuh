// Programmatic dependent launch (PDL, sm_90+): lets a kernel start while the kernel before it
// in the stream is still running, so its prologue (launch, weight prefetch) overlaps the
// predecessor's tail instead of waiting for it. Device code only (included by .cu files).
//
// Contract for a kernel launched with LaunchDependent:
// - Before WaitForPrerequisiteGrids() it may read only data that no earlier kernel of the
//   stream writes (weights), and must write nothing.
// - WaitForPrerequisiteGrids() returns once every earlier grid has completed and its memory is
//   visible; then the kernel proceeds as if launched normally.
// AllowDependentLaunch() in any kernel lets the next kernel of the stream, if it was launched
// with LaunchDependent, start before this one ends. Both are no-ops before sm_90 and in kernels
// launched the ordinary way, and a kernel launched normally always waits for its predecessor.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/launch_options.h"

namespace bitfleet::kernels::cuda {

__device__ __forceinline__ void AllowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void WaitForPrerequisiteGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Whether the current device runs programmatic dependent launches (compute capability >= 9.0).
// Cached per device: the first call on a device queries it.
bool DependentLaunchSupported();

// Multiprocessors of the current device (cached per device; 1 if the query fails). Kernels that
// size their grid to one wave use it.
int DeviceMultiProcessors();

// Launches `kernel` on `stream` as a programmatic dependent launch where the device supports it,
// kernels/cuda/launch_options.h allows it and `stream` is not the legacy default stream, else as
// an ordinary launch. Returns the launch status. The kernel must follow the contract above.
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchDependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, cudaStream_t stream,
                            Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  // Not on the legacy default stream, whose implicit synchronization with other streams the
  // programmatic edge would weaken.
  const bool legacy = stream == nullptr || stream == cudaStreamLegacy;
  if (!legacy && DependentLaunchesEnabled() && DependentLaunchSupported()) {
    config.attrs = attribute;
    config.numAttrs = 1;
  }
  const cudaError_t error = cudaLaunchKernelEx(&config, kernel, static_cast<Args&&>(args)...);
  return error != cudaSuccess ? error : cudaGetLastError();
}

}  // namespace bitfleet::kernels::cuda

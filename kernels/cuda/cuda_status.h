// CUDA runtime errors as abseil Status, and the device check every GPU entry point (and every
// `gpu` test) starts with.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "core/status.h"

namespace bitfleet::kernels::cuda {

// OK for cudaSuccess. Otherwise "<what>: <CUDA error name>: <message>" with the code
// RESOURCE_EXHAUSTED (out of memory), INVALID_ARGUMENT (cudaErrorInvalidValue: a launcher
// rejected a shape), FAILED_PRECONDITION (no device or driver), or INTERNAL. Clears the
// runtime's last-error state (non-sticky errors), since the error is now the caller's.
Status CudaStatus(cudaError_t error, const char* what);

// The number of CUDA devices this process can use; 0 with `reason` set when there is none
// (no driver, no device, or a driver older than the runtime this binary was built with).
int UsableCudaDevices(std::string* reason);

}  // namespace bitfleet::kernels::cuda

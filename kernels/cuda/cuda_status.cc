#include "kernels/cuda/cuda_status.h"

namespace bitfleet::kernels::cuda {

Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  // The error is handled here: clear it as the runtime's "last error" (a failed cudaMalloc
  // would otherwise be reported again by the next launcher's cudaGetLastError). Sticky errors
  // (a faulted context) stay.
  cudaGetLastError();
  const std::string message = absl::StrCat(what, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error));
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorInvalidValue:
      return absl::InvalidArgumentError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

int UsableCudaDevices(std::string* reason) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // the failed query must not linger as the sticky "last error"
    if (reason != nullptr) {
      *reason = absl::StrCat("no usable CUDA device: ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
    }
    return 0;
  }
  if (count == 0 && reason != nullptr) *reason = "no CUDA device found";
  return count;
}

}  // namespace bitfleet::kernels::cuda

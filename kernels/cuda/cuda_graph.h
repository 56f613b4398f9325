// A CUDA graph captured from a stream and instantiated: the decode steps of the GPU runner and
// the GPU benchmark replay their kernel sequences through it (one launch instead of hundreds).
// Move-only; destroys the graph and its executable.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <utility>

#include "core/status.h"

namespace bitfleet::kernels::cuda {

class CudaGraph {
 public:
  CudaGraph() = default;
  CudaGraph(CudaGraph&& other) noexcept { *this = std::move(other); }
  CudaGraph& operator=(CudaGraph&& other) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  ~CudaGraph() { Reset(); }

  // Records what `enqueue` puts on `stream` (nothing runs) and instantiates it. `enqueue` must
  // only enqueue stream-ordered work on `stream` (no synchronous copies, no synchronization);
  // its error, or the capture's, is returned and leaves the graph empty. The stream leaves
  // capture mode either way.
  Status Capture(cudaStream_t stream, const std::function<Status()>& enqueue);
  // Runs the captured work on `stream`. FAILED_PRECONDITION when nothing was captured.
  Status Launch(cudaStream_t stream) const;
  bool captured() const { return exec_ != nullptr; }

 private:
  void Reset();
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace bitfleet::kernels::cuda

#include "kernels/cuda/cuda_graph.h"

#include <utility>

#include "kernels/cuda/cuda_status.h"

namespace bitfleet::kernels::cuda {

CudaGraph& CudaGraph::operator=(CudaGraph&& other) noexcept {
  if (this != &other) {
    Reset();
    graph_ = std::exchange(other.graph_, nullptr);
    exec_ = std::exchange(other.exec_, nullptr);
  }
  return *this;
}

void CudaGraph::Reset() {
  if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) cudaGraphDestroy(graph_);
  exec_ = nullptr;
  graph_ = nullptr;
}

Status CudaGraph::Capture(cudaStream_t stream, const std::function<Status()>& enqueue) {
  Reset();
  BF_RETURN_IF_ERROR(CudaStatus(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture"));
  const Status status = enqueue();
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (!status.ok() || end != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    BF_RETURN_IF_ERROR(status);
    return CudaStatus(end, "end capture");
  }
  graph_ = graph;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec_, graph_, 0);
  if (instantiated != cudaSuccess) {
    exec_ = nullptr;
    Reset();
    return CudaStatus(instantiated, "graph instantiate");
  }
  return absl::OkStatus();
}

Status CudaGraph::Launch(cudaStream_t stream) const {
  if (exec_ == nullptr) return absl::FailedPreconditionError("CudaGraph::Launch: nothing captured");
  return CudaStatus(cudaGraphLaunch(exec_, stream), "graph launch");
}

}  // namespace bitfleet::kernels::cuda

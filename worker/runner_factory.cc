#include "worker/runner_factory.h"

#include "absl/strings/str_cat.h"
#include "worker/model_runner.h"
#ifdef BITFLEET_HAVE_CUDA_RUNNER
#include "kernels/cuda/cuda_status.h"
#include "worker/cuda_model_runner.h"
#endif

namespace bitfleet::worker {

bool CudaRunnerBuilt() {
#ifdef BITFLEET_HAVE_CUDA_RUNNER
  return true;
#else
  return false;
#endif
}

int UsableCudaDeviceCount() {
#ifdef BITFLEET_HAVE_CUDA_RUNNER
  std::string reason;
  return kernels::cuda::UsableCudaDevices(&reason);
#else
  return 0;
#endif
}

StatusOr<RunnerDevice> ParseRunnerDevice(const std::string& text) {
  if (text == "cpu") return RunnerDevice::kCpu;
  if (text == "cuda") return RunnerDevice::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("device '", text, "': expected cpu or cuda"));
}

StatusOr<std::unique_ptr<StepRunner>> CreateRunner(std::shared_ptr<const gguf::GgufFile> file,
                                                   const RunnerOptions& options) {
  if (options.device == RunnerDevice::kCpu) {
    BF_ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner, ModelRunner::Create(std::move(file), options));
    return std::unique_ptr<StepRunner>(std::move(runner));
  }
#ifdef BITFLEET_HAVE_CUDA_RUNNER
  BF_ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> runner, CudaModelRunner::Create(std::move(file), options));
  return std::unique_ptr<StepRunner>(std::move(runner));
#else
  (void)file;
  return absl::UnimplementedError(
      "device cuda: this bitfleet was built without CUDA (configure with -DBITFLEET_CUDA=ON where nvcc is installed)");
#endif
}

}  // namespace bitfleet::worker

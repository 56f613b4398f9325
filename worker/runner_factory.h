// Builds the StepRunner that RunnerOptions::device names: the CPU ModelRunner or, in CUDA builds,
// the CudaModelRunner on the current device.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "model/gguf/gguf.h"
#include "worker/step_runner.h"

namespace bitfleet::worker {

// True when this binary was built with the CUDA runner (-DBITFLEET_CUDA=ON).
bool CudaRunnerBuilt();
// CUDA devices this process can use (0 without the CUDA runner, a driver or a device).
int UsableCudaDeviceCount();

// Parses "cpu" / "cuda" (the --device flag). INVALID_ARGUMENT for anything else.
StatusOr<RunnerDevice> ParseRunnerDevice(const std::string& text);

// ModelRunner::Create or CudaModelRunner::Create, by options.device (either as one rank of
// options.communicator's group). For kCuda: UNIMPLEMENTED in a build without CUDA;
// FAILED_PRECONDITION without a usable device.
StatusOr<std::unique_ptr<StepRunner>> CreateRunner(std::shared_ptr<const gguf::GgufFile> file,
                                                   const RunnerOptions& options);

}  // namespace bitfleet::worker

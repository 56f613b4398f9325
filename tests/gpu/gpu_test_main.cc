// main() of every `gpu` test binary: without a usable CUDA device it prints why and exits with
// 77, which CTest reports as skipped (SKIP_RETURN_CODE); with one it prints the device and runs
// the tests (each also skips itself through BF_REQUIRE_GPU when run on its own).
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"

int main(int argc, char** argv) {
  std::string reason;
  if (bitfleet::kernels::cuda::UsableCudaDevices(&reason) == 0) {
    std::printf("SKIPPED: %s; the gpu tests need a CUDA device\n", reason.c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    std::printf("CUDA device 0: %s, compute capability %d.%d, %d SMs, %.1f GiB\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1 << 30));
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

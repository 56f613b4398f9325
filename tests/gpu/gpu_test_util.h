// Shared pieces of the `gpu` tests: the device check, device arrays and sentinel-guarded device
// outputs. Infrastructure failures (a failed cudaMalloc or copy) abort the test binary with a
// message: they are not what the tests check.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"

namespace bitfleet::gputest {

// Skips the running test (GTEST_SKIP) with the reason when no CUDA device is usable.
#define BF_REQUIRE_GPU()                                                   \
  do {                                                                     \
    std::string bf_gpu_reason;                                             \
    if (::bitfleet::kernels::cuda::UsableCudaDevices(&bf_gpu_reason) == 0) \
      GTEST_SKIP() << bf_gpu_reason;                                       \
  } while (0)

// Fails the running test at the first CUDA error of a launch or of the work before it.
#define BF_ASSERT_CUDA(expr) ASSERT_EQ(cudaSuccess, (expr)) << cudaGetErrorString(cudaGetLastError())
#define BF_ASSERT_LAUNCH(expr)                         \
  do {                                                 \
    BF_ASSERT_CUDA(expr);                              \
    BF_ASSERT_CUDA(cudaDeviceSynchronize());           \
  } while (0)

// Aborts with `what` when `error` is not cudaSuccess.
void CheckCuda(cudaError_t error, const char* what);

// A device array of T (trivial types), copied to and from host vectors.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    CheckCuda(cudaMalloc(reinterpret_cast<void**>(&ptr_), Bytes() == 0 ? 1 : Bytes()), "cudaMalloc");
    CheckCuda(cudaMemset(ptr_, 0, Bytes() == 0 ? 1 : Bytes()), "cudaMemset");
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { Upload(host); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr_); }

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  void Upload(const std::vector<T>& host) {
    CheckCuda(cudaMemcpy(ptr_, host.data(), std::min(host.size(), n_) * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> ToHost() const {
    std::vector<T> host(n_);
    CheckCuda(cudaMemcpy(host.data(), ptr_, Bytes(), cudaMemcpyDeviceToHost), "download");
    return host;
  }

 private:
  size_t Bytes() const { return n_ * sizeof(T); }
  T* ptr_ = nullptr;
  size_t n_;
};

// A device float output with kGuard sentinel floats on both sides (as the CPU harness's
// GuardedFloats): Check() downloads it and reports writes outside it and unwritten outputs.
class GuardedDeviceFloats {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr uint32_t kSentinelBits = 0x7fa5a5a5u;  // a NaN no kernel produces

  explicit GuardedDeviceFloats(size_t n);
  float* data() const { return buf_.get() + kGuard; }
  size_t size() const { return n_; }
  // Refills everything with the sentinel.
  void Reset();
  // The n outputs; sets `*error` (empty when fine) when a guard changed or an output is unwritten.
  std::vector<float> Check(std::string* error) const;

 private:
  size_t n_;
  DeviceArray<float> buf_;
};

}  // namespace bitfleet::gputest

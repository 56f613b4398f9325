#include <atomic>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/launch_options.h"

namespace bitfleet::kernels::cuda {
namespace {
std::atomic<bool> g_dependent_launches{true};
}  // namespace

void SetDependentLaunches(bool enabled) { g_dependent_launches.store(enabled, std::memory_order_relaxed); }
bool DependentLaunchesEnabled() { return g_dependent_launches.load(std::memory_order_relaxed); }

namespace {

// Per device: 0 unknown, else the cached answer plus one. Devices past the table are asked every time.
constexpr int kCachedDevices = 64;

template <typename Query>
int CachedPerDevice(std::atomic<int> (&cache)[kCachedDevices], int fallback, Query query) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return fallback;
  }
  const bool cached = device >= 0 && device < kCachedDevices;
  if (cached) {
    const int known = cache[device].load(std::memory_order_relaxed);
    if (known != 0) return known - 1;
  }
  int value = 0;
  if (!query(device, &value)) {
    cudaGetLastError();
    return fallback;
  }
  if (cached) cache[device].store(value + 1, std::memory_order_relaxed);
  return value;
}

}  // namespace

int DeviceMultiProcessors() {
  static std::atomic<int> cache[kCachedDevices] = {};
  return CachedPerDevice(cache, 1, [](int device, int* value) {
    return cudaDeviceGetAttribute(value, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && *value > 0;
  });
}

bool DependentLaunchSupported() {
  static std::atomic<int> cache[kCachedDevices] = {};
  return CachedPerDevice(cache, 0, [](int device, int* value) {
           int major = 0;
           if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
           *value = major >= 9 ? 1 : 0;
           return true;
         }) == 1;
}

}  // namespace bitfleet::kernels::cuda

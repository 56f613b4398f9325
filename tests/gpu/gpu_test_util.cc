#include "tests/gpu/gpu_test_util.h"

#include <cstdio>
#include <cstdlib>

namespace bitfleet::gputest {

void CheckCuda(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return;
  std::fprintf(stderr, "fatal CUDA error in test setup (%s): %s\n", what, cudaGetErrorString(error));
  std::abort();
}

GuardedDeviceFloats::GuardedDeviceFloats(size_t n) : n_(n), buf_(n + 2 * kGuard) { Reset(); }

void GuardedDeviceFloats::Reset() {
  float sentinel;
  std::memcpy(&sentinel, &kSentinelBits, sizeof(sentinel));
  buf_.Upload(std::vector<float>(n_ + 2 * kGuard, sentinel));
}

std::vector<float> GuardedDeviceFloats::Check(std::string* error) const {
  const std::vector<float> all = buf_.ToHost();
  auto is_sentinel = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    return u == kSentinelBits;
  };
  error->clear();
  for (size_t i = 0; i < kGuard; ++i) {
    if (!is_sentinel(all[i]) || !is_sentinel(all[kGuard + n_ + i])) {
      *error = "kernel wrote outside its output";
      break;
    }
  }
  for (size_t i = 0; i < n_ && error->empty(); ++i) {
    if (is_sentinel(all[kGuard + i])) *error = "output " + std::to_string(i) + " left unwritten";
  }
  return std::vector<float>(all.begin() + kGuard, all.begin() + kGuard + n_);
}

}  // namespace bitfleet::gputest

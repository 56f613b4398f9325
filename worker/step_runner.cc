#include "worker/step_runner.h"

namespace bitfleet::worker {

const char* RunnerDeviceName(RunnerDevice device) {
  switch (device) {
    case RunnerDevice::kCpu:
      return "cpu";
    case RunnerDevice::kCuda:
      return "cuda";
  }
  return "unknown";
}

}  // namespace bitfleet::worker

// Where `bitfleet serve --device cuda` puts its GPU ranks and how they talk: a pure function of
// the replica shape, the visible devices and what the build has, so the policy is testable
// without GPUs (tests/unit/tools/gpu_placement_test.cc).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace bitfleet::tools {

struct GpuPlacementInput {
  int tp = 1;
  int replicas = 1;
  int usable_gpus = 0;              // CUDA devices this process sees
  bool nccl_built = false;
  bool kv_pool_given = false;       // --kv-blocks set, or the pool is not sized by memory
  std::string cuda_visible_devices;  // the caller's CUDA_VISIBLE_DEVICES ("" when unset)
};

struct GpuPlacement {
  // The workers' --comm: "nccl" when every rank has a GPU of its own and the build has NCCL,
  // else "auto" (Open MPI, collectives staged through host memory).
  std::string comm = "auto";
  // Why the collectives are staged ("" with NCCL): for the log.
  std::string staged_reason;
  // CUDA_VISIBLE_DEVICES of each replica's launch: replica i takes the i-th run of tp visible
  // devices (of the caller's list when set, else indices i·tp .. i·tp + tp - 1), and its ranks
  // then take them by node-local rank. Empty with one replica: its ranks see every device.
  std::vector<std::string> replica_devices;
};

// INVALID_ARGUMENT when the replicas would need GPUs that are not there (more than one replica
// and fewer GPUs than ranks, or a CUDA_VISIBLE_DEVICES list too short), and when the ranks of
// one replica share GPUs without a given KV pool size (each would size its pool by memory the
// others are filling). With no usable GPU at all the placement is the default: the workers
// report why they have no device.
StatusOr<GpuPlacement> PlaceGpuRanks(const GpuPlacementInput& in);

}  // namespace bitfleet::tools

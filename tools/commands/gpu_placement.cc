#include "tools/commands/gpu_placement.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace bitfleet::tools {

StatusOr<GpuPlacement> PlaceGpuRanks(const GpuPlacementInput& in) {
  if (in.tp < 1 || in.replicas < 1) return absl::InvalidArgumentError("tp and replicas must be at least 1");
  GpuPlacement placement;
  const int ranks = in.tp * in.replicas;
  const std::vector<std::string> visible = absl::StrSplit(in.cuda_visible_devices, ',', absl::SkipEmpty());
  if (in.replicas > 1) {
    const std::string need = absl::StrCat("--replicas ", in.replicas, " --tp ", in.tp,
                                          " with --device cuda needs a GPU per rank (", ranks, "); ");
    if (!visible.empty() && static_cast<int>(visible.size()) < ranks) {
      return absl::InvalidArgumentError(absl::StrCat(need, "CUDA_VISIBLE_DEVICES lists ", visible.size()));
    }
    if (in.usable_gpus > 0 && in.usable_gpus < ranks) {
      return absl::InvalidArgumentError(absl::StrCat(need, in.usable_gpus, " visible"));
    }
    for (int i = 0; i < in.replicas; ++i) {
      std::vector<std::string> devices;
      for (int r = 0; r < in.tp; ++r) {
        const int k = i * in.tp + r;
        devices.push_back(visible.empty() ? std::to_string(k) : visible[k]);
      }
      placement.replica_devices.push_back(absl::StrJoin(devices, ","));
    }
  }
  if (in.tp == 1 || in.usable_gpus == 0) return placement;  // no collectives, or no device to place
  if (in.usable_gpus < ranks && !in.kv_pool_given) {
    return absl::InvalidArgumentError(absl::StrCat(ranks, " GPU ranks on ", in.usable_gpus, " visible GPUs share ",
                                                   "devices: give each rank's KV pool size with --kv-blocks"));
  }
  if (in.nccl_built && in.usable_gpus >= ranks) {
    placement.comm = "nccl";
  } else {
    placement.staged_reason = in.nccl_built ? absl::StrCat("only ", in.usable_gpus,
                                                           " GPUs visible, and NCCL needs one per rank")
                                            : "this build has no NCCL";
  }
  return placement;
}

}  // namespace bitfleet::tools

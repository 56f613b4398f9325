// tools/commands/gpu_placement.h: where `serve --device cuda` puts its ranks and which
// communicator they use, for every shape of replicas, GPUs and builds.
#include "tools/commands/gpu_placement.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::tools {
namespace {

GpuPlacementInput Input(int tp, int replicas, int gpus, bool nccl = true) {
  GpuPlacementInput in;
  in.tp = tp;
  in.replicas = replicas;
  in.usable_gpus = gpus;
  in.nccl_built = nccl;
  return in;
}

TEST(GpuPlacementTest, OneReplicaAtTp1IsLeftAlone) {
  StatusOr<GpuPlacement> p = PlaceGpuRanks(Input(1, 1, 8));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->comm, "auto");
  EXPECT_TRUE(p->replica_devices.empty());
}

TEST(GpuPlacementTest, ReplicasTakeConsecutiveRunsOfDevices) {
  StatusOr<GpuPlacement> p = PlaceGpuRanks(Input(2, 3, 8));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->comm, "nccl");
  EXPECT_EQ(p->replica_devices, (std::vector<std::string>{"0,1", "2,3", "4,5"}));

  GpuPlacementInput in = Input(2, 2, 4);
  in.cuda_visible_devices = "7,5,3,1";  // the caller's list, in its order
  p = PlaceGpuRanks(in);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->replica_devices, (std::vector<std::string>{"7,5", "3,1"}));

  p = PlaceGpuRanks(Input(1, 2, 2));  // TP 1: one device per replica, no collectives
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->replica_devices, (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(p->comm, "auto");
}

TEST(GpuPlacementTest, NcclOnlyWithAGpuPerRankAndInTheBuild) {
  StatusOr<GpuPlacement> p = PlaceGpuRanks(Input(4, 1, 4, /*nccl=*/false));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->comm, "auto");
  EXPECT_NE(p->staged_reason.find("no NCCL"), std::string::npos) << p->staged_reason;

  GpuPlacementInput shared = Input(2, 1, 1);
  shared.kv_pool_given = true;
  p = PlaceGpuRanks(shared);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->comm, "auto");
  EXPECT_NE(p->staged_reason.find("only 1 GPUs"), std::string::npos) << p->staged_reason;
}

TEST(GpuPlacementTest, RanksSharingAGpuNeedTheKvPoolSize) {
  StatusOr<GpuPlacement> p = PlaceGpuRanks(Input(2, 1, 1));
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_NE(std::string(p.status().message()).find("--kv-blocks"), std::string::npos) << p.status();
}

TEST(GpuPlacementTest, ReplicasNeedAGpuPerRank) {
  StatusOr<GpuPlacement> p = PlaceGpuRanks(Input(2, 2, 3));
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_NE(std::string(p.status().message()).find("3 visible"), std::string::npos) << p.status();

  GpuPlacementInput in = Input(1, 3, 8);
  in.cuda_visible_devices = "0,1";
  p = PlaceGpuRanks(in);
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_NE(std::string(p.status().message()).find("CUDA_VISIBLE_DEVICES lists 2"), std::string::npos)
      << p.status();
}

// Without a usable GPU nothing is refused here: the workers start and say why they have none.
TEST(GpuPlacementTest, NoGpuLeavesTheWorkersToSayWhy) {
  StatusOr<GpuPlacement> p = PlaceGpuRanks(Input(2, 2, 0));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->comm, "auto");
  EXPECT_EQ(p->replica_devices, (std::vector<std::string>{"0,1", "2,3"}));
}

TEST(GpuPlacementTest, RejectsAnEmptyShape) {
  EXPECT_EQ(PlaceGpuRanks(Input(0, 1, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlaceGpuRanks(Input(1, 0, 1)).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::tools

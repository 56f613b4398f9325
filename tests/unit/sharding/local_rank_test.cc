// sharding/local_rank.h: the node-local rank and size launchers put in the environment.
#include "sharding/local_rank.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace bitfleet::sharding {
namespace {

// Clears every variable the functions read, so each test states its own environment.
class LocalRankTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK",
                             "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE"}) {
      unsetenv(name);
    }
  }
};

TEST_F(LocalRankTest, WithoutALauncherRankZeroOfUnknownSize) {
  EXPECT_EQ(NodeLocalRank(), 0);
  EXPECT_EQ(NodeLocalSize(), 0);
}

TEST_F(LocalRankTest, MpirunFirstThenTheOthersInOrder) {
  setenv("LOCAL_RANK", "5", 1);
  EXPECT_EQ(NodeLocalRank(), 5);
  setenv("SLURM_LOCALID", "4", 1);
  EXPECT_EQ(NodeLocalRank(), 4);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  EXPECT_EQ(NodeLocalRank(), 3);
  setenv("LOCAL_WORLD_SIZE", "8", 1);
  EXPECT_EQ(NodeLocalSize(), 8);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
  EXPECT_EQ(NodeLocalSize(), 4);
}

// A value that is not a small non-negative integer is skipped, not half-read.
TEST_F(LocalRankTest, MalformedValuesAreSkipped) {
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2x", 1);
  setenv("LOCAL_RANK", "1", 1);
  EXPECT_EQ(NodeLocalRank(), 1);
  setenv("LOCAL_RANK", "-1", 1);
  EXPECT_EQ(NodeLocalRank(), 0);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "", 1);
  setenv("LOCAL_WORLD_SIZE", "99999999999", 1);
  EXPECT_EQ(NodeLocalSize(), 0);
}

}  // namespace
}  // namespace bitfleet::sharding

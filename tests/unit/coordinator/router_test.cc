// The router's cost model: a cached prefix attracts a request until the holder's load outweighs
// the prefill it saves.
#include "coordinator/router.h"

#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::coordinator {
namespace {

ReplicaCandidate Candidate(int64_t cached, int64_t pending, int32_t sequences) {
  ReplicaCandidate c;
  c.healthy = true;
  c.fits = true;
  c.prompt_tokens = 1000;
  c.cached_tokens = cached;
  c.pending_prefill_tokens = pending;
  c.sequences = sequences;
  return c;
}

TEST(RouterTest, PrefersTheReplicaHoldingTheLongestPrefix) {
  const std::vector<ReplicaCandidate> c = {Candidate(0, 0, 2), Candidate(512, 0, 2), Candidate(256, 0, 2)};
  EXPECT_EQ(PickReplica(c, {}), 1);
  EXPECT_DOUBLE_EQ(RouteCost(c[1], {}), 488 + 2 * 16.0);
}

TEST(RouterTest, LoadOutweighsASmallPrefix) {
  // Replica 1 saves 64 prefill tokens but has 500 queued ahead of the request.
  const std::vector<ReplicaCandidate> c = {Candidate(0, 0, 0), Candidate(64, 500, 4)};
  EXPECT_EQ(PickReplica(c, {}), 0);
  // ...while a long cached prefix is worth waiting for.
  const std::vector<ReplicaCandidate> d = {Candidate(0, 0, 0), Candidate(960, 500, 4)};
  EXPECT_EQ(PickReplica(d, {}), 1);
}

TEST(RouterTest, TiesGoToTheLowerIndex) {
  const std::vector<ReplicaCandidate> c = {Candidate(0, 10, 1), Candidate(0, 10, 1)};
  EXPECT_EQ(PickReplica(c, {}), 0);
}

TEST(RouterTest, SkipsUnhealthyAndTooSmallReplicas) {
  std::vector<ReplicaCandidate> c = {Candidate(900, 0, 0), Candidate(0, 5000, 30), Candidate(900, 0, 0)};
  c[0].healthy = false;
  c[2].fits = false;
  EXPECT_EQ(PickReplica(c, {}), 1);
  c[1].healthy = false;
  EXPECT_EQ(PickReplica(c, {}), -1);
  EXPECT_EQ(PickReplica({}, {}), -1);
}

TEST(RouterTest, PerSequenceCostIsTunable) {
  const std::vector<ReplicaCandidate> c = {Candidate(0, 0, 0), Candidate(100, 0, 10)};
  EXPECT_EQ(PickReplica(c, {.per_sequence_cost = 16.0}), 0);  // costs 1000 vs 900 + 160
  EXPECT_EQ(PickReplica(c, {.per_sequence_cost = 1.0}), 1);   // costs 1000 vs 900 + 10
}

}  // namespace
}  // namespace bitfleet::coordinator

#include "sharding/fake_communicator.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::sharding {
namespace {

// Runs fn(rank) on one thread per rank of `group` and joins them.
template <typename Fn>
void OnEveryRank(FakeGroup& group, Fn fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < group.size(); ++r) threads.emplace_back([&, r] { fn(group.rank(r)); });
  for (auto& t : threads) t.join();
}

TEST(FakeCommunicatorTest, AllReduceSumAndMax) {
  FakeGroup group(3);
  OnEveryRank(group, [](Communicator* c) {
    for (int round = 0; round < 50; ++round) {
      float v[2] = {static_cast<float>(c->rank() + 1), static_cast<float>(-c->rank())};
      ASSERT_TRUE(c->AllReduceSum(v, 2).ok());
      EXPECT_EQ(v[0], 6.0f);
      EXPECT_EQ(v[1], -3.0f);
      float m[1] = {static_cast<float>(c->rank() * 10 + round)};
      ASSERT_TRUE(c->AllReduceMax(m, 1).ok());
      EXPECT_EQ(m[0], 20.0f + round);
    }
  });
}

TEST(FakeCommunicatorTest, AllGatherInPlaceAndBroadcast) {
  FakeGroup group(4);
  OnEveryRank(group, [](Communicator* c) {
    std::vector<int> all(4, -1);
    all[c->rank()] = c->rank() * 7;
    ASSERT_TRUE(c->AllGather(&all[c->rank()], sizeof(int), all.data()).ok());
    EXPECT_EQ(all, (std::vector<int>{0, 7, 14, 21}));
    int value = c->rank() == 2 ? 42 : 0;
    ASSERT_TRUE(c->Broadcast(&value, sizeof(value), 2).ok());
    EXPECT_EQ(value, 42);
    EXPECT_TRUE(c->Barrier().ok());
  });
}

TEST(FakeCommunicatorTest, MissingPeerTimesOut) {
  FakeGroup group(2, std::chrono::milliseconds(100));
  float v = 1;
  Status status = group.rank(0)->AllReduceSum(&v, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  // The group stays failed: a TP group is one failure unit.
  EXPECT_EQ(group.rank(1)->Barrier().code(), absl::StatusCode::kUnavailable);
}

TEST(SingleRankCommunicatorTest, Identity) {
  SingleRankCommunicator c;
  float v[2] = {1, 2};
  EXPECT_TRUE(c.AllReduceSum(v, 2).ok());
  EXPECT_EQ(v[1], 2.0f);
  int src = 5, dst = 0;
  EXPECT_TRUE(c.AllGather(&src, sizeof(int), &dst).ok());
  EXPECT_EQ(dst, 5);
  EXPECT_FALSE(c.Broadcast(&dst, sizeof(int), 1).ok());
}

}  // namespace
}  // namespace bitfleet::sharding

// Runs under mpirun (see tests/mpi/CMakeLists.txt): every rank executes the same tests.
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sharding/mpi_communicator.h"

namespace bitfleet::sharding {
namespace {

std::unique_ptr<MpiCommunicator> MakeComm(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  auto comm = MpiCommunicator::Create(timeout);
  EXPECT_TRUE(comm.ok()) << comm.status();
  return comm.ok() ? std::move(comm).value() : nullptr;
}

TEST(MpiCommunicatorTest, Collectives) {
  auto c = MakeComm();
  ASSERT_NE(c, nullptr);
  ASSERT_GE(c->size(), 2) << "run under mpirun -np >= 2";
  const int n = c->size();
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(c->rank() + i);
  ASSERT_TRUE(c->AllReduceSum(v.data(), v.size()).ok());
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], n * (n - 1) / 2.0f + n * static_cast<float>(i));
  float m = static_cast<float>(c->rank());
  ASSERT_TRUE(c->AllReduceMax(&m, 1).ok());
  EXPECT_EQ(m, static_cast<float>(n - 1));
  std::vector<int> all(n);
  int mine = 100 + c->rank();
  ASSERT_TRUE(c->AllGather(&mine, sizeof(int), all.data()).ok());
  for (int r = 0; r < n; ++r) EXPECT_EQ(all[r], 100 + r);
  int value = c->rank() == n - 1 ? 7 : 0;
  ASSERT_TRUE(c->Broadcast(&value, sizeof(int), n - 1).ok());
  EXPECT_EQ(value, 7);
  EXPECT_TRUE(c->Barrier().ok());
}

// A peer that does not join a collective turns into DEADLINE_EXCEEDED on the waiting rank
// within the timeout, not a hang.
TEST(MpiCommunicatorTest, HungPeerIsDetected) {
  auto fast = MakeComm(std::chrono::milliseconds(300));
  auto slow = MakeComm();
  ASSERT_NE(fast, nullptr);
  ASSERT_NE(slow, nullptr);
  float v = 1;
  if (fast->rank() == 0) {
    const auto start = std::chrono::steady_clock::now();
    Status status = fast->AllReduceSum(&v, 1);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
    EXPECT_LT(seconds, 1.0);
    EXPECT_TRUE(MpiGroupBroken());
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    // Completes the collective rank 0 abandoned, so the job can end cleanly.
    (void)fast->AllReduceSum(&v, 1);
  }
  EXPECT_TRUE(slow->Barrier().ok());
  // The peer caught up, so this job may finalize normally after all.
  ResetMpiGroupBrokenForTesting();
}

}  // namespace
}  // namespace bitfleet::sharding

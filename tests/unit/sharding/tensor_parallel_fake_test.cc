// The sharded forward pass in one process: N threads are N ranks over a FakeGroup, each with its
// own ModelRunner over the same file. TP=N must reproduce TP=1 (docs/sharding.md). The full
// type × TP matrix runs across processes in tests/mpi; this is the fast in-process check.
#include <thread>

#include "gtest/gtest.h"
#include "sharding/fake_communicator.h"
#include "tests/unit/sharding/tp_test_util.h"

namespace bitfleet::tp_testing {
namespace {

TEST(TensorParallelFakeTest, LlamaF32AtTp2And4) {
  for (int tp : {2, 4}) ExpectTpMatchesSingleRank(TinySpec("llama", DType::kF32), tp, MakeCpuRunner, "");
}

TEST(TensorParallelFakeTest, BitnetQ8AtTp2) {
  ExpectTpMatchesSingleRank(TinySpec("bitnet", DType::kQ8_0), 2, MakeCpuRunner, "");
}

TEST(TensorParallelFakeTest, Tp3ReplicatesKvHeadsPerQueryHead) {
  ExpectTpMatchesSingleRank(SpecFor("llama", DType::kF16, 3), 3, MakeCpuRunner, "");
}

// Qwen2's Q/K/V biases follow their projections' rows: split at TP=2, and at TP=3 the replicated
// KV slots (several row ranges per rank) take the biases of the KV heads they hold.
TEST(TensorParallelFakeTest, Qwen2BiasesAtTp2And3) {
  ExpectTpMatchesSingleRank(TinySpec("qwen2", DType::kF32), 2, MakeCpuRunner, "");
  ExpectTpMatchesSingleRank(SpecFor("qwen2", DType::kF16, 3), 3, MakeCpuRunner, "");
}

TEST(TensorParallelFakeTest, BitnetTernaryAtTp4) {
  ExpectTpMatchesSingleRank(SpecFor("bitnet-b1.58", DType::kI2_S, 4), 4, MakeCpuRunner, "");
}

// A rank that stops taking part makes the others fail with DEADLINE_EXCEEDED, not hang.
TEST(TensorParallelFakeTest, HungRankTimesOutThePeers) {
  auto path = SynthModel(TinySpec("llama", DType::kF32), ::testing::TempDir());
  ASSERT_TRUE(path.ok()) << path.status();
  sharding::FakeGroup group(2, std::chrono::milliseconds(300));
  Status peer_status;
  std::thread rank0([&] {
    auto runner = MakeRunner(*path, group.rank(0), false);
    ASSERT_TRUE(runner.ok()) << runner.status();
    peer_status = Generate(**runner, {5, 6, 7}, 4, GreedyParams()).status();
  });
  rank0.join();  // rank 1 never steps
  EXPECT_EQ(peer_status.code(), absl::StatusCode::kDeadlineExceeded) << peer_status;
}

}  // namespace
}  // namespace bitfleet::tp_testing

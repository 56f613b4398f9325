// The sharded forward pass in one process: N threads are N ranks over a FakeGroup, each with its
// own ModelRunner over the same file. TP=N must reproduce TP=1 (docs/sharding.md). The full
// type × TP matrix runs across processes in tests/mpi; this is the fast in-process check.
#include <cstdio>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sharding/fake_communicator.h"
#include "tests/unit/sharding/tp_test_util.h"

namespace bitfleet::tp_testing {
namespace {

struct RankResult {
  Status status;
  std::vector<float> logits;
  std::vector<int32_t> greedy;
  std::vector<int32_t> sampled;
};

struct Reference {
  std::vector<float> logits;
  std::vector<int32_t> greedy;
  std::vector<int32_t> sampled;
};

std::vector<std::vector<int32_t>> Sequences(int n_vocab) {
  return {TestTokens(17, n_vocab, 1), TestTokens(9, n_vocab, 2), TestTokens(23, n_vocab, 3)};
}

Status RunRank(const std::string& path, sharding::Communicator* comm, RankResult* out) {
  BF_ASSIGN_OR_RETURN(auto gathered, MakeRunner(path, comm, /*gather_logits=*/true));
  BF_ASSIGN_OR_RETURN(out->logits, TeacherForcedLogits(*gathered, Sequences(gathered->n_vocab())));
  BF_ASSIGN_OR_RETURN(auto sliced, MakeRunner(path, comm, /*gather_logits=*/false));
  const std::vector<int32_t> prompt = TestTokens(5, sliced->n_vocab(), 9);
  BF_ASSIGN_OR_RETURN(out->greedy, Generate(*sliced, prompt, 64, GreedyParams()));
  BF_ASSIGN_OR_RETURN(out->sampled, Generate(*sliced, prompt, 32, TopKTopPParams(11)));
  return absl::OkStatus();
}

Reference SingleRank(const std::string& path) {
  Reference ref;
  auto runner = MakeRunner(path, nullptr, false);
  EXPECT_TRUE(runner.ok()) << runner.status();
  if (!runner.ok()) return ref;
  ref.logits = *TeacherForcedLogits(**runner, Sequences((*runner)->n_vocab()));
  const std::vector<int32_t> prompt = TestTokens(5, (*runner)->n_vocab(), 9);
  ref.greedy = *Generate(**runner, prompt, 64, GreedyParams(), /*single_rank_sampler=*/true);
  ref.sampled = *Generate(**runner, prompt, 32, TopKTopPParams(11), /*single_rank_sampler=*/true);
  return ref;
}

void ExpectTpMatchesSingleRank(const ModelSpec& spec, int tp) {
  SCOPED_TRACE(spec.Label() + " TP=" + std::to_string(tp));
  auto path = SynthModel(spec, ::testing::TempDir());
  ASSERT_TRUE(path.ok()) << path.status();
  const Reference ref = SingleRank(*path);
  sharding::FakeGroup group(tp, std::chrono::seconds(60));
  std::vector<RankResult> results(tp);
  std::vector<std::thread> threads;
  for (int r = 0; r < tp; ++r) {
    threads.emplace_back([&, r] { results[r].status = RunRank(*path, group.rank(r), &results[r]); });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < tp; ++r) {
    ASSERT_TRUE(results[r].status.ok()) << "rank " << r << ": " << results[r].status;
    // Every rank ends up with the same whole rows and the same tokens.
    EXPECT_EQ(results[r].logits, results[0].logits) << "rank " << r;
    EXPECT_EQ(results[r].greedy, results[0].greedy) << "rank " << r;
    EXPECT_EQ(results[r].sampled, results[0].sampled) << "rank " << r;
  }
  const Agreement a = Compare(results[0].logits, ref.logits, spec.n_vocab);
  std::printf("%s TP=%d: max rel err %.3g, mean KL %.3g, top-1 %.4f\n", spec.Label().c_str(), tp,
              a.max_relative_error, a.mean_kl, a.top1);
  EXPECT_EQ(results[0].greedy, ref.greedy);
  if (Int8Activations(spec.type)) {
    // int8 activations: a rounding-level difference can flip one activation's int8 value, so
    // logits move by ~1e-4 and a sampled draw near a boundary may pick a neighbour.
    EXPECT_LE(a.mean_kl, kInt8MaxMeanKl);
    EXPECT_GE(a.top1, kInt8MinTop1PerModel);
  } else {
    EXPECT_LE(a.max_relative_error, kFloatMaxRelativeError);
    EXPECT_EQ(results[0].sampled, ref.sampled);
  }
}

TEST(TensorParallelFakeTest, LlamaF32AtTp2And4) {
  for (int tp : {2, 4}) ExpectTpMatchesSingleRank(TinySpec("llama", DType::kF32), tp);
}

TEST(TensorParallelFakeTest, BitnetQ8AtTp2) { ExpectTpMatchesSingleRank(TinySpec("bitnet", DType::kQ8_0), 2); }

TEST(TensorParallelFakeTest, Tp3ReplicatesKvHeadsPerQueryHead) {
  ExpectTpMatchesSingleRank(SpecFor("llama", DType::kF16, 3), 3);
}

TEST(TensorParallelFakeTest, BitnetTernaryAtTp4) {
  ExpectTpMatchesSingleRank(SpecFor("bitnet-b1.58", DType::kI2_S, 4), 4);
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

// CudaModelRunner as one rank of a tensor-parallel group, on one device: N threads are N ranks
// over a FakeGroup, each with its own runner over the same file, their collectives staged
// through host memory. TP=N must reproduce the TP=1 CUDA runner within the budgets the CPU's
// tensor-parallel tests hold (tests/unit/sharding/tensor_parallel_fake_test.cc, docs/sharding.md
// "Equivalence budget"), and every rank must end with the same gathered rows and tokens.
//
// NCCL refuses two ranks on one device, so NCCL between ranks needs a machine with two GPUs;
// one GPU runs the runner's NCCL path with a group of one (its all-reduces are identities, but
// they are queued, captured into the step graphs and waited for exactly as in a larger group).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#if defined(BITFLEET_HAVE_NCCL)
#include "sharding/nccl_communicator.h"
#endif
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/sharding/tp_test_util.h"
#include "worker/cuda_model_runner.h"

namespace bitfleet::tp_testing {
namespace {

StatusOr<std::unique_ptr<worker::StepRunner>> MakeCudaRunner(const std::string& path, sharding::Communicator* comm,
                                                             bool gather_logits) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(path));
  BF_ASSIGN_OR_RETURN(std::unique_ptr<worker::CudaModelRunner> runner,
                      worker::CudaModelRunner::Create(std::shared_ptr<const gguf::GgufFile>(std::move(file)),
                                                      TestRunnerOptions(comm, gather_logits)));
  return std::unique_ptr<worker::StepRunner>(std::move(runner));
}

// A rank that stops taking part fails the others within 20 s rather than hanging the check.
void ExpectTpMatchesOneDevice(const ModelSpec& spec, int tp) {
  ExpectTpMatchesSingleRank(spec, tp, MakeCudaRunner, "[gpu] ", std::chrono::seconds(20));
}

// Every type of the CPU's equivalence matrix, llama and bitnet (BitNet's sub-norm sums and the
// ternary absmax are all-reduced), KV heads split.
TEST(CudaTensorParallelTest, EveryTypeAtTp2MatchesOneRank) {
  BF_REQUIRE_GPU();
  for (const ModelSpec& spec : MatrixFor(2)) {
    ExpectTpMatchesOneDevice(spec, 2);
    if (HasFatalFailure()) return;  // the first model that breaks says enough
  }
}

// Twelve heads over four KV heads at TP=3: KV slots replicated, one per query head.
TEST(CudaTensorParallelTest, Tp3ReplicatesKvHeadsPerQueryHead) {
  BF_REQUIRE_GPU();
  ExpectTpMatchesOneDevice(SpecFor("llama", DType::kF16, 3), 3);
  if (HasFatalFailure()) return;
  ExpectTpMatchesOneDevice(SpecFor("bitnet", DType::kQ8_0, 3), 3);
}

TEST(CudaTensorParallelTest, BitnetTernaryAtTp4) {
  BF_REQUIRE_GPU();
  ExpectTpMatchesOneDevice(SpecFor("bitnet", DType::kTQ2_0, 4), 4);
}

#if defined(BITFLEET_HAVE_NCCL)
// The runner with an NCCL communicator of one rank against the runner without: the same
// teacher-forced rows within the int8 / float budgets (the sub-norms run unfused on the NCCL
// path), the same greedy tokens, and decode steps replayed from graphs that hold the
// collectives.
TEST(CudaTensorParallelTest, NcclPathOfOneRankMatchesTheRunnerWithout) {
  BF_REQUIRE_GPU();
  sharding::NcclOptions nccl_options;
  nccl_options.unique_id = sharding::NewNcclUniqueId().value();
  nccl_options.device = 0;
  nccl_options.timeout = std::chrono::seconds(20);
  StatusOr<std::unique_ptr<sharding::NcclCommunicator>> nccl = sharding::NcclCommunicator::Create(nccl_options);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  for (const ModelSpec& spec : {SpecFor("bitnet", DType::kTQ2_0, 2), TinySpec("llama", DType::kF16)}) {
    SCOPED_TRACE(spec.Label());
    auto path = SynthModel(spec, ::testing::TempDir());
    ASSERT_TRUE(path.ok()) << path.status();
    auto plain = MakeCudaRunner(*path, nullptr, false);
    ASSERT_TRUE(plain.ok()) << plain.status();
    auto with_nccl = MakeCudaRunner(*path, nccl->get(), false);
    ASSERT_TRUE(with_nccl.ok()) << with_nccl.status();
    ASSERT_TRUE((*with_nccl)->logits_whole());

    const auto sequences = std::vector<std::vector<int32_t>>{TestTokens(17, spec.n_vocab, 1),
                                                             TestTokens(9, spec.n_vocab, 2)};
    StatusOr<std::vector<float>> want = TeacherForcedLogits(**plain, sequences);
    ASSERT_TRUE(want.ok()) << want.status();
    StatusOr<std::vector<float>> got = TeacherForcedLogits(**with_nccl, sequences);
    ASSERT_TRUE(got.ok()) << got.status();
    const Agreement a = Compare(*got, *want, spec.n_vocab);
    std::printf("[gpu] %s, NCCL of one rank against none: max rel err %.3g, mean KL %.3g, top-1 %.4f\n",
                spec.Label().c_str(), a.max_relative_error, a.mean_kl, a.top1);
    if (Int8Activations(spec.type)) {
      EXPECT_LE(a.mean_kl, kInt8MaxMeanKl);
      EXPECT_GE(a.top1, kInt8MinTop1PerModel);
      EXPECT_LE(a.worst_flip_margin, kInt8MaxFlipMargin) << "a top-1 row differs beyond a near-tie";
    } else {
      EXPECT_LE(a.max_relative_error, kFloatMaxRelativeError);
    }

    const std::vector<int32_t> prompt = TestTokens(5, spec.n_vocab, 9);
    StatusOr<std::vector<int32_t>> greedy_plain = Generate(**plain, prompt, 32, GreedyParams(), true);
    StatusOr<std::vector<int32_t>> greedy_nccl = Generate(**with_nccl, prompt, 32, GreedyParams(), true);
    ASSERT_TRUE(greedy_plain.ok()) << greedy_plain.status();
    ASSERT_TRUE(greedy_nccl.ok()) << greedy_nccl.status();
    EXPECT_EQ(*greedy_nccl, *greedy_plain);
    auto* runner = dynamic_cast<worker::CudaModelRunner*>(with_nccl->get());
    ASSERT_NE(runner, nullptr);
    EXPECT_TRUE(runner->step_graphs()) << "a capture with the collectives failed (see the log)";
    EXPECT_GT(runner->step_graph_launches(), 20) << "decode steps must replay from graphs";
  }
  EXPECT_FALSE((*nccl)->deferred()) << "the runners hand the communicator back undeferred";
}
#endif

}  // namespace
}  // namespace bitfleet::tp_testing

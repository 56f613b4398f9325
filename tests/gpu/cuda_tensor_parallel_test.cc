// CudaModelRunner as one rank of a tensor-parallel group, on one device: N threads are N ranks
// over a FakeGroup, each with its own runner over the same file, their collectives staged
// through host memory. TP=N must reproduce the TP=1 CUDA runner within the budgets the CPU's
// tensor-parallel tests hold (tests/unit/sharding/tensor_parallel_fake_test.cc, docs/sharding.md
// "Equivalence budget"), and every rank must end with the same gathered rows and tokens.
//
// NCCL refuses two ranks on one device, so its path (the same runner code, with the collectives
// on device buffers) needs a machine with two GPUs; docs/cuda.md says where that stands.
#include <chrono>
#include <memory>
#include <string>

#include "gtest/gtest.h"
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

}  // namespace
}  // namespace bitfleet::tp_testing

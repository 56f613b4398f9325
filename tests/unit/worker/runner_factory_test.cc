// worker/runner_factory.h: --device parsing and which runner CreateRunner builds. The CUDA
// runner's numerics are tests/gpu/cuda_model_runner_test.cc's; here only the dispatch and its
// errors, which hold in every build (with or without CUDA, with or without a device).
#include "worker/runner_factory.h"

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/matmul.h"
#include "sharding/detached_communicator.h"
#include "tests/unit/worker/runner_test_util.h"
#include "worker/model_runner.h"

namespace bitfleet::worker {
namespace {

RunnerOptions SmallOptions(RunnerDevice device) {
  RunnerOptions o;
  o.device = device;
  o.threads = 1;
  o.max_step_tokens = 16;
  o.max_step_sequences = 2;
  o.max_logit_rows = 2;
  o.max_context = 64;
  o.kv_blocks = 8;
  return o;
}

std::shared_ptr<const gguf::GgufFile> TinyLlama() {
  auto path = testing::SynthTinyModel("llama", DType::kF32);
  EXPECT_TRUE(path.ok()) << path.status();
  if (!path.ok()) return nullptr;
  auto file = testing::OpenModel(*path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? *file : nullptr;
}

TEST(RunnerFactoryTest, ParsesTheDeviceNames) {
  EXPECT_EQ(ParseRunnerDevice("cpu").value(), RunnerDevice::kCpu);
  EXPECT_EQ(ParseRunnerDevice("cuda").value(), RunnerDevice::kCuda);
  EXPECT_STREQ(RunnerDeviceName(RunnerDevice::kCpu), "cpu");
  EXPECT_STREQ(RunnerDeviceName(RunnerDevice::kCuda), "cuda");
  const auto bad = ParseRunnerDevice("gpu");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("cpu or cuda"), std::string::npos) << bad.status();
}

TEST(RunnerFactoryTest, CpuDeviceBuildsTheCpuRunner) {
  auto file = TinyLlama();
  ASSERT_NE(file, nullptr);
  auto runner = CreateRunner(file, SmallOptions(RunnerDevice::kCpu));
  ASSERT_TRUE(runner.ok()) << runner.status();
  StepRunner& r = **runner;
  EXPECT_NE(dynamic_cast<ModelRunner*>(&r), nullptr);
  EXPECT_EQ(r.kernel_variant(), kernels::CpuVariantName());
  EXPECT_EQ(r.tp_size(), 1);
  EXPECT_TRUE(r.logits_whole());
  EXPECT_EQ(r.kv_blocks(), 8);

  // One step through the interface gives a whole, finite logit row.
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<int32_t> table = {0};
  const SequenceStep step{tokens, 0, table, false};
  auto logits = r.Step({&step, 1});
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->n_vocab(), r.n_vocab());
  for (float v : logits->Last(0)) ASSERT_TRUE(std::isfinite(v));
}

// A CPU KV budget (kv_blocks 0, kv_cache_bytes > 0) takes as many blocks of the cache type as fit:
// the int8 cache holds 2 / 1.125 as many tokens in the same bytes as f16 (head_dim a multiple of
// 32), or one per row step otherwise. A budget under one context is refused before loading.
TEST(RunnerFactoryTest, KvCacheBudgetSetsTheBlockCount) {
  auto file = TinyLlama();
  ASSERT_NE(file, nullptr);
  constexpr int64_t kBudget = int64_t{3} << 20;
  std::map<cache::KvType, int> blocks;
  for (const cache::KvType type : {cache::KvType::kF16, cache::KvType::kInt8}) {
    RunnerOptions o = SmallOptions(RunnerDevice::kCpu);
    o.kv_blocks = 0;
    o.kv_cache_bytes = kBudget;
    o.kv_type = type;
    auto runner = CreateRunner(file, o);
    ASSERT_TRUE(runner.ok()) << runner.status();
    const model::ModelConfig& c = (*runner)->config();
    const double block_bytes = 2.0 * c.n_layer * o.kv_block_size * c.n_head_kv * c.head_dim *
                               cache::KvBytesPerElement(type, static_cast<int>(c.head_dim));
    EXPECT_EQ((*runner)->kv_blocks(), static_cast<int>(kBudget / static_cast<int64_t>(block_bytes)))
        << cache::KvTypeName(type);
    blocks[type] = (*runner)->kv_blocks();
  }
  EXPECT_GT(blocks[cache::KvType::kInt8], blocks[cache::KvType::kF16] * 3 / 2);

  RunnerOptions small = SmallOptions(RunnerDevice::kCpu);
  small.kv_blocks = 0;
  small.kv_cache_bytes = 4096;
  auto refused = CreateRunner(file, small);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_NE(std::string(refused.status().message()).find("--kv-cache-mib"), std::string::npos) << refused.status();
}

TEST(RunnerFactoryTest, CudaDeviceRunsOrSaysWhyNot) {
  auto file = TinyLlama();
  ASSERT_NE(file, nullptr);
  auto runner = CreateRunner(file, SmallOptions(RunnerDevice::kCuda));
  if (!CudaRunnerBuilt()) {
    ASSERT_EQ(runner.status().code(), absl::StatusCode::kUnimplemented) << runner.status();
    EXPECT_NE(std::string(runner.status().message()).find("BITFLEET_CUDA=ON"), std::string::npos) << runner.status();
    return;
  }
  if (!runner.ok()) {
    // A CUDA build on a machine without a usable device.
    EXPECT_EQ(runner.status().code(), absl::StatusCode::kFailedPrecondition) << runner.status();
    return;
  }
  EXPECT_EQ((*runner)->kernel_variant().rfind("cuda sm_", 0), 0u) << (*runner)->kernel_variant();
  EXPECT_EQ((*runner)->tp_size(), 1);
  EXPECT_TRUE((*runner)->logits_whole());
}

TEST(RunnerFactoryTest, GpuMemoryUtilizationMustBeAFraction) {
  auto file = TinyLlama();
  ASSERT_NE(file, nullptr);
  for (double bad : {-0.1, 1.5}) {
    RunnerOptions options = SmallOptions(RunnerDevice::kCpu);
    options.gpu_memory_utilization = bad;
    auto runner = CreateRunner(file, options);
    EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// A CUDA runner may be one rank of a tensor-parallel group: it loads that rank's shard (loading
// needs no collective, so a detached rank will do), or says why there is no CUDA runner.
TEST(RunnerFactoryTest, CudaDeviceBuildsATensorParallelRank) {
  auto file = TinyLlama();
  ASSERT_NE(file, nullptr);
  sharding::DetachedRankCommunicator rank(1, 2);
  RunnerOptions options = SmallOptions(RunnerDevice::kCuda);
  options.communicator = &rank;
  auto runner = CreateRunner(file, options);
  if (!CudaRunnerBuilt()) {
    ASSERT_EQ(runner.status().code(), absl::StatusCode::kUnimplemented) << runner.status();
    return;
  }
  if (!runner.ok()) {
    EXPECT_EQ(runner.status().code(), absl::StatusCode::kFailedPrecondition) << runner.status();
    return;
  }
  StepRunner& r = **runner;
  EXPECT_EQ(r.tp_rank(), 1);
  EXPECT_EQ(r.tp_size(), 2);
  EXPECT_FALSE(r.logits_whole());
  const int n_vocab = r.n_vocab();
  EXPECT_EQ(r.vocab_slice().end, static_cast<uint64_t>(n_vocab));
  EXPECT_GT(r.vocab_slice().begin, 0u);
}

}  // namespace
}  // namespace bitfleet::worker

// CudaModelRunner against the CPU ModelRunner on the synthetic tiny models of every
// architecture: the same continuous-batching steps (prefill chunks with all their logits, then
// decode tokens of several sequences at once, a sequence joining mid-way, a projection scale)
// must give the same logits within the budgets below, and the same greedy tokens wherever the
// CPU's top two logits are further apart than the budget allows the paths to differ.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/block_table.h"
#include "core/dtype.h"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "model/tokenizer/incremental_decoder.h"
#include "tests/e2e/engine_test_assets.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/worker/runner_test_util.h"
#include "worker/cuda_model_runner.h"
#include "worker/model_runner.h"

namespace bitfleet::worker {
namespace {

using testing::MaxRowError;
using testing::OpenModel;
using testing::SynthTinyModel;
using testing::TestTokens;

// Budgets, as max |GPU - CPU| over a row / max |CPU| over the row. Float weights: the two paths
// differ by float rounding only (norm sums, RoPE, a K/V element now and then rounding to the
// neighbouring f16 in the cache: ~1e-4 in the logits; tests/unit/worker/model_runner_test.cc).
// Quantized weights with int8 activations: such a rounding-level difference flips int8 values
// and reshuffles the quantization noise, which on these random models reaches a few percent of
// the largest logit over a sequence (the CPU runner's own budget against float activations is
// 6e-2).
constexpr double kFloatBudget = 1e-3;
constexpr double kQuantizedBudget = 6e-2;

RunnerOptions TestOptions() {
  RunnerOptions o;
  o.threads = 2;
  o.max_step_tokens = 64;
  o.max_step_sequences = 8;
  o.max_logit_rows = 64;
  o.max_context = 256;
  o.kv_blocks = 64;
  return o;
}

int ArgMax(std::span<const float> row) {
  return static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
}

// Top-1 minus top-2 of a row.
float Margin(std::span<const float> row) {
  std::vector<float> v(row.begin(), row.end());
  std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<float>());
  return v[0] - v[1];
}

struct Seq {
  std::vector<int32_t> tokens;    // the whole sequence so far
  std::vector<int32_t> table;     // its KV blocks
  int cached = 0;                 // positions already in both runners' caches
};

// The step of `s` over its tokens not yet cached.
SequenceStep UncachedStep(const Seq& s, bool all_logits = false) {
  SequenceStep st;
  st.tokens = std::span<const int32_t>(s.tokens).subspan(s.cached);
  st.start_pos = s.cached;
  st.block_table = s.table;
  st.all_logits = all_logits;
  return st;
}

// Runs `batch` on both runners and requires every logit row of every sequence to be the same
// bits; `want` gets the first runner's logits (valid until its next step). `where` labels a
// failure.
void StepBothBitForBit(CudaModelRunner& first, CudaModelRunner& second, std::span<const SequenceStep> batch,
                       const std::string& where, StatusOr<StepLogits>* want) {
  *want = first.Step(batch);
  ASSERT_TRUE(want->ok()) << want->status();
  StatusOr<StepLogits> got = second.Step(batch);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int k = 0; k < static_cast<int>(batch.size()); ++k) {
    ASSERT_EQ(got->rows(k), (*want)->rows(k)) << where << " sequence " << k;
    for (int r = 0; r < (*want)->rows(k); ++r) {
      const std::span<const float> w = (*want)->Row(k, r);
      const std::span<const float> g = got->Row(k, r);
      ASSERT_EQ(std::memcmp(w.data(), g.data(), w.size_bytes()), 0) << where << " sequence " << k << ", row " << r;
    }
  }
}

void CheckModel(const std::string& arch, DType type, const std::string& scaled_copy = "") {
  const double budget = IsQuantized(type) ? kQuantizedBudget : kFloatBudget;
  SCOPED_TRACE(arch + " " + DTypeName(type) + (scaled_copy.empty() ? "" : " with projection scales"));
  StatusOr<std::string> path = SynthTinyModel(arch, type);
  ASSERT_TRUE(path.ok()) << path.status();
  std::string model = *path;
  if (!scaled_copy.empty()) {
    ASSERT_TRUE(testing::CopyWithScales(model, scaled_copy, {{"blk.0.attn_q.scale", 0.75f}, {"blk.1.ffn_down.scale", 1.5f}})
                    .ok());
    model = scaled_copy;
  }
  StatusOr<std::shared_ptr<const gguf::GgufFile>> file = OpenModel(model);
  ASSERT_TRUE(file.ok()) << file.status();
  StatusOr<std::unique_ptr<ModelRunner>> cpu = ModelRunner::Create(*file, TestOptions());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  StatusOr<std::unique_ptr<CudaModelRunner>> gpu = CudaModelRunner::Create(*file, TestOptions());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const int n_vocab = (*cpu)->n_vocab();

  // Three sequences on disjoint blocks: A and B prefill at step 0, C joins at step 2.
  std::vector<Seq> seqs(3);
  const std::vector<int> prompt = {11, 23, 5};
  for (int i = 0; i < 3; ++i) {
    seqs[i].tokens = TestTokens(prompt[i], n_vocab, 100 + i);
    for (int b = 0; b < 16; ++b) seqs[i].table.push_back(i * 16 + b);
  }
  double worst = 0.0;
  int compared_tokens = 0;
  for (int step = 0; step < 8; ++step) {
    std::vector<int> active;
    for (int i = 0; i < 3; ++i) {
      if (i < 2 || step >= 2) active.push_back(i);
    }
    std::vector<SequenceStep> batch;
    for (int i : active) {
      Seq& s = seqs[i];
      SequenceStep st;
      st.tokens = std::span<const int32_t>(s.tokens).subspan(s.cached);
      st.start_pos = s.cached;
      st.block_table = s.table;
      st.all_logits = st.tokens.size() > 1;  // every prefill row is compared
      batch.push_back(st);
    }
    StatusOr<StepLogits> want = (*cpu)->Step(batch);
    ASSERT_TRUE(want.ok()) << want.status();
    StatusOr<StepLogits> got = (*gpu)->Step(batch);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->n_sequences(), want->n_sequences());
    for (size_t k = 0; k < batch.size(); ++k) {
      const int seq = static_cast<int>(k);
      ASSERT_EQ(got->rows(seq), want->rows(seq));
      for (int r = 0; r < want->rows(seq); ++r) {
        const std::span<const float> w = want->Row(seq, r);
        const std::span<const float> g = got->Row(seq, r);
        const double err = MaxRowError(std::vector<float>(g.begin(), g.end()), std::vector<float>(w.begin(), w.end()),
                                       static_cast<size_t>(n_vocab));
        worst = std::max(worst, err);
        ASSERT_LE(err, budget) << "step " << step << " sequence " << active[k] << " row " << r;
      }
      // Greedy continuation from the CPU's logits (both runners then see the same tokens); the
      // GPU must pick the same token unless the CPU's top two are within the error seen.
      const std::span<const float> last = want->Last(seq);
      const int token = ArgMax(last);
      float row_max = 0.0f;
      for (float v : last) row_max = std::max(row_max, std::fabs(v));
      if (Margin(last) > 2 * budget * row_max) {
        EXPECT_EQ(ArgMax(got->Last(seq)), token) << "step " << step << " sequence " << active[k];
        ++compared_tokens;
      }
      Seq& s = seqs[active[k]];
      s.cached = static_cast<int>(s.tokens.size());
      s.tokens.push_back(token);
    }
  }
  std::printf("[gpu] runner %s %s: worst row error %.2e, %d greedy tokens compared\n", arch.c_str(), DTypeName(type),
              worst, compared_tokens);
}

TEST(CudaModelRunnerTest, MatchesTheCpuRunnerOnEveryArchitecture) {
  BF_REQUIRE_GPU();
  CheckModel("bitnet", DType::kTQ2_0);
  CheckModel("bitnet-b1.58", DType::kI2_S);
  CheckModel("bitnet-b1.58", DType::kTQ1_0);
  CheckModel("llama", DType::kF16);
  CheckModel("llama", DType::kQ4_0);
  CheckModel("llama", DType::kQ8_0);
  CheckModel("qwen2", DType::kQ4_0);  // Q/K/V biases
  CheckModel("bitnet", DType::kTQ2_0, ::testing::TempDir() + "/bitnet_scaled.gguf");
}

// Two runners of one synthetic model with a feature (`set`) on in `on` and off in `off`: each test
// below requires the same logits from both.
struct RunnerPair {
  std::unique_ptr<CudaModelRunner> on;
  std::unique_ptr<CudaModelRunner> off;
};

void MakeRunnerPair(const std::string& arch, DType type, void (CudaModelRunner::*set)(bool), RunnerPair* pair) {
  StatusOr<std::string> path = SynthTinyModel(arch, type);
  ASSERT_TRUE(path.ok()) << path.status();
  StatusOr<std::shared_ptr<const gguf::GgufFile>> file = OpenModel(*path);
  ASSERT_TRUE(file.ok()) << file.status();
  StatusOr<std::unique_ptr<CudaModelRunner>> on = CudaModelRunner::Create(*file, TestOptions());
  StatusOr<std::unique_ptr<CudaModelRunner>> off = CudaModelRunner::Create(*file, TestOptions());
  ASSERT_TRUE(on.ok()) << on.status();
  ASSERT_TRUE(off.ok()) << off.status();
  pair->on = std::move(*on);
  pair->off = std::move(*off);
  (pair->on.get()->*set)(true);
  (pair->off.get()->*set)(false);
}

// Decode steps replayed from CUDA graphs give the logits plain launches give, bit for bit, at
// a batch on the mat-vec path (2 sequences) and one on the tensor-core path (6), and the replays
// happen: a shape is captured on its second step and replayed from then on.
void CheckDecodeGraphs(const std::string& arch, DType type) {
  SCOPED_TRACE(arch + " " + DTypeName(type));
  RunnerPair pair;
  MakeRunnerPair(arch, type, &CudaModelRunner::set_step_graphs, &pair);
  if (::testing::Test::HasFatalFailure()) return;
  CudaModelRunner& graphs = *pair.on;
  CudaModelRunner& plain = *pair.off;
  const int n_vocab = plain.n_vocab();

  std::vector<Seq> seqs(6);
  for (int i = 0; i < 6; ++i) {
    seqs[i].tokens = TestTokens(4, n_vocab, 300 + i);
    for (int b = 0; b < 8; ++b) seqs[i].table.push_back(i * 8 + b);
  }
  // Step 0 prefills all six; steps 1-8 decode all six; steps 9-14 decode the first two.
  for (int step = 0; step < 15; ++step) {
    const int active = step < 9 ? 6 : 2;
    std::vector<SequenceStep> batch;
    for (int i = 0; i < active; ++i) batch.push_back(UncachedStep(seqs[i]));
    StatusOr<StepLogits> want = absl::UnknownError("not run");
    StepBothBitForBit(plain, graphs, batch, "step " + std::to_string(step), &want);
    if (::testing::Test::HasFatalFailure()) return;
    for (int k = 0; k < active; ++k) {
      Seq& s = seqs[k];
      s.cached = static_cast<int>(s.tokens.size());
      s.tokens.push_back(ArgMax(want->Last(k)));
    }
  }
  ASSERT_TRUE(graphs.step_graphs()) << "a capture failed (see the log)";
  // Six sequences: step 1 plain, 2-8 from the graph (7); two: step 9 plain, 10-14 (5).
  EXPECT_EQ(graphs.step_graph_launches(), 12);
  EXPECT_EQ(plain.step_graph_launches(), 0);
}

TEST(CudaModelRunnerTest, DecodeGraphsReplayExactlyWhatPlainLaunchesCompute) {
  BF_REQUIRE_GPU();
  CheckDecodeGraphs("bitnet", DType::kTQ2_0);
  CheckDecodeGraphs("llama", DType::kQ4_1);
  CheckDecodeGraphs("llama", DType::kF16);
}

// Prefill steps replay graphs too: four sequences, each prefilled in the same three steps (24
// tokens from position 0, 16 from 24, then 8 from 40 with logits for every token, as `eval`
// asks) on its own blocks, so each key recurs with other tokens, positions and block tables.
// Every logit row equals the plain runner's bit for bit; the first sequence's steps run plain,
// the second's are captured, the third's and fourth's replayed.
void CheckPrefillGraphs(const std::string& arch, DType type) {
  SCOPED_TRACE(arch + " " + DTypeName(type));
  RunnerPair pair;
  MakeRunnerPair(arch, type, &CudaModelRunner::set_step_graphs, &pair);
  if (::testing::Test::HasFatalFailure()) return;
  CudaModelRunner& graphs = *pair.on;
  CudaModelRunner& plain = *pair.off;
  const int n_vocab = plain.n_vocab();
  struct Chunk {
    int begin, end;
    bool all_logits;
  };
  const Chunk chunks[] = {{0, 24, false}, {24, 40, false}, {40, 48, true}};
  for (int k = 0; k < 4; ++k) {
    const std::vector<int32_t> tokens = TestTokens(48, n_vocab, 700 + k);
    std::vector<int32_t> table;
    for (int b = 0; b < 3; ++b) table.push_back(40 - 10 * k + b);  // other blocks for each sequence
    for (const Chunk& c : chunks) {
      SequenceStep st;
      st.tokens = std::span<const int32_t>(tokens).subspan(c.begin, c.end - c.begin);
      st.start_pos = c.begin;
      st.block_table = table;
      st.all_logits = c.all_logits;
      const std::vector<SequenceStep> batch = {st};
      StatusOr<StepLogits> want = absl::UnknownError("not run");
      StepBothBitForBit(plain, graphs, batch,
                        absl::StrCat("sequence ", k, ", tokens ", c.begin, "-", c.end, ":"), &want);
      if (::testing::Test::HasFatalFailure()) return;
      ASSERT_EQ(want->rows(0), c.all_logits ? c.end - c.begin : 1);
    }
  }
  ASSERT_TRUE(graphs.step_graphs()) << "a capture failed (see the log)";
  EXPECT_EQ(graphs.step_graph_launches(), 9);  // three keys, from the second sequence on
  EXPECT_EQ(plain.step_graph_launches(), 0);
}

TEST(CudaModelRunnerTest, PrefillGraphsReplayExactlyWhatPlainLaunchesCompute) {
  BF_REQUIRE_GPU();
  CheckPrefillGraphs("bitnet", DType::kTQ2_0);
  CheckPrefillGraphs("llama", DType::kQ4_0);
}

// A fused-kernel switch (`set`) gives the logits of the unfused runner, bit for bit, over prefill
// and decode steps of three sequences; `launches` counts the fused kernels it ran.
void CheckFusedSwitch(const std::string& arch, DType type, void (CudaModelRunner::*set)(bool),
                      int64_t (CudaModelRunner::*launches)() const, bool expect_fused) {
  SCOPED_TRACE(arch + " " + DTypeName(type));
  RunnerPair pair;
  MakeRunnerPair(arch, type, set, &pair);
  if (::testing::Test::HasFatalFailure()) return;
  CudaModelRunner& fused = *pair.on;
  CudaModelRunner& plain = *pair.off;
  const int n_vocab = plain.n_vocab();
  std::vector<Seq> seqs(3);
  for (int i = 0; i < 3; ++i) {
    seqs[i].tokens = TestTokens(7 + 5 * i, n_vocab, 500 + i);
    for (int b = 0; b < 8; ++b) seqs[i].table.push_back(i * 8 + b);
  }
  for (int step = 0; step < 6; ++step) {
    std::vector<SequenceStep> batch;
    for (const Seq& q : seqs) batch.push_back(UncachedStep(q, /*all_logits=*/q.tokens.size() - q.cached > 1));
    StatusOr<StepLogits> want = absl::UnknownError("not run");
    StepBothBitForBit(plain, fused, batch, "step " + std::to_string(step), &want);
    if (::testing::Test::HasFatalFailure()) return;
    for (int k = 0; k < 3; ++k) {
      Seq& q = seqs[k];
      q.cached = static_cast<int>(q.tokens.size());
      q.tokens.push_back(ArgMax(want->Last(k)));
    }
  }
  EXPECT_EQ((fused.*launches)() > 0, expect_fused);
  EXPECT_EQ((plain.*launches)(), 0);
}

// Norms fused with the activation quantization are used wherever the projections share a
// scaling (every norm of BitNet, the two input norms of a quantized llama), not for float weights.
void CheckFusedNorms(const std::string& arch, DType type, bool expect_fused) {
  CheckFusedSwitch(arch, type, &CudaModelRunner::set_fused_norms, &CudaModelRunner::fused_norm_launches,
                   expect_fused);
}

// RoPE and the KV write in one kernel per layer, for every architecture and weight type.
TEST(CudaModelRunnerTest, FusedRopeKvComputesExactlyWhatSeparateKernelsCompute) {
  BF_REQUIRE_GPU();
  for (const auto& [arch, type] : {std::pair<std::string, DType>{"bitnet", DType::kTQ2_0},
                                   {"llama", DType::kQ4_0}, {"llama", DType::kF16}}) {
    CheckFusedSwitch(arch, type, &CudaModelRunner::set_fused_rope_kv, &CudaModelRunner::fused_rope_kv_launches, true);
    if (HasFatalFailure()) return;
  }
}

TEST(CudaModelRunnerTest, FusedNormsComputeExactlyWhatSeparateKernelsCompute) {
  BF_REQUIRE_GPU();
  CheckFusedNorms("bitnet", DType::kTQ2_0, true);
  CheckFusedNorms("bitnet-b1.58", DType::kI2_S, true);
  CheckFusedNorms("llama", DType::kQ4_1, true);
  CheckFusedNorms("llama", DType::kF16, false);
}

// kv_blocks 0 with gpu_memory_utilization: the pool fills the device up to that fraction of its
// memory (more than the one context kv_blocks 0 means otherwise), and a fraction below what the
// weights already use is refused with the reason.
TEST(CudaModelRunnerTest, SizesTheKvPoolByDeviceMemory) {
  BF_REQUIRE_GPU();
  StatusOr<std::string> path = SynthTinyModel("bitnet", DType::kTQ2_0);
  ASSERT_TRUE(path.ok()) << path.status();
  StatusOr<std::shared_ptr<const gguf::GgufFile>> file = OpenModel(*path);
  ASSERT_TRUE(file.ok()) << file.status();
  size_t free_before = 0;
  size_t total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
  const double used_fraction = 1.0 - static_cast<double>(free_before) / static_cast<double>(total);
  RunnerOptions options = TestOptions();
  options.kv_blocks = 0;
  // Room for a few hundred MiB more than what is in use (other processes may share the GPU).
  options.gpu_memory_utilization = std::min(1.0, used_fraction + 0.3 * (1.0 - used_fraction));
  StatusOr<std::unique_ptr<CudaModelRunner>> sized = CudaModelRunner::Create(*file, options);
  ASSERT_TRUE(sized.ok()) << sized.status();
  EXPECT_GT((*sized)->kv_blocks(), static_cast<int>(cache::BlocksForTokens(options.max_context, 16)));
  size_t free_after = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_after, &total), cudaSuccess);
  const double now_used = 1.0 - static_cast<double>(free_after) / static_cast<double>(total);
  EXPECT_LE(now_used, options.gpu_memory_utilization + 0.01);
  sized->reset();

  options.gpu_memory_utilization = used_fraction / 2;
  StatusOr<std::unique_ptr<CudaModelRunner>> refused = CudaModelRunner::Create(*file, options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(std::string(refused.status().message()).find("--gpu-memory-utilization"), std::string::npos);
}

TEST(CudaModelRunnerTest, RejectsWhatTheCpuRunnerRejects) {
  BF_REQUIRE_GPU();
  StatusOr<std::string> path = SynthTinyModel("bitnet", DType::kTQ2_0);
  ASSERT_TRUE(path.ok()) << path.status();
  StatusOr<std::shared_ptr<const gguf::GgufFile>> file = OpenModel(*path);
  ASSERT_TRUE(file.ok()) << file.status();
  StatusOr<std::unique_ptr<CudaModelRunner>> gpu = CudaModelRunner::Create(*file, TestOptions());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<int32_t> table = {0};
  const std::vector<int32_t> bad_table = {1000};
  const std::vector<int32_t> bad_token = {(*gpu)->n_vocab()};
  SequenceStep ok{tokens, 0, table, false};
  EXPECT_TRUE((*gpu)->Step(std::span<const SequenceStep>(&ok, 1)).ok());
  SequenceStep s1{tokens, 0, bad_table, false};
  EXPECT_EQ((*gpu)->Step(std::span<const SequenceStep>(&s1, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  SequenceStep s2{bad_token, 0, table, false};
  EXPECT_EQ((*gpu)->Step(std::span<const SequenceStep>(&s2, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  SequenceStep s3{{}, 0, table, false};
  EXPECT_EQ((*gpu)->Step(std::span<const SequenceStep>(&s3, 1)).status().code(), absl::StatusCode::kInvalidArgument);
}

// A real trained model: stories260K (llama2.c, F32, head dim 8) decoded greedily from BOS on the
// GPU tells the known story (tests/e2e/engine_stories_test.cc; shared/models/stories260K).
// Skipped when the checkpoint is absent (gpu-check carries it and sets BITFLEET_SHARED_DIR).
TEST(CudaModelRunnerTest, Stories260kGreedyFromBosTellsTheKnownStory) {
  BF_REQUIRE_GPU();
  constexpr char kKnownStory[] =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
      "One day, she saw a big, red ball. She wanted to play with it, but it was too high.";
  StatusOr<std::string> path = e2e::Stories260kGguf("f32");
  if (absl::IsNotFound(path.status())) GTEST_SKIP() << path.status();
  ASSERT_TRUE(path.ok()) << path.status();
  StatusOr<std::shared_ptr<const gguf::GgufFile>> file = OpenModel(*path);
  ASSERT_TRUE(file.ok()) << file.status();
  StatusOr<tokenizer::Vocab> vocab = tokenizer::LoadVocabFromGguf(**file);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok = tokenizer::Tokenizer::Create(std::move(*vocab));
  ASSERT_TRUE(tok.ok()) << tok.status();
  StatusOr<std::unique_ptr<CudaModelRunner>> gpu = CudaModelRunner::Create(*file, TestOptions());
  ASSERT_TRUE(gpu.ok()) << gpu.status();

  std::vector<int32_t> table;
  for (int b = 0; b < 16; ++b) table.push_back(b);
  std::vector<int32_t> tokens = {(*tok)->bos()};
  tokenizer::IncrementalDecoder stream(**tok);
  std::string text;
  for (int i = 0; i < 80; ++i) {
    SequenceStep step;
    step.tokens = std::span<const int32_t>(tokens).subspan(tokens.size() - 1);
    step.start_pos = static_cast<int32_t>(tokens.size()) - 1;
    step.block_table = table;
    StatusOr<StepLogits> logits = (*gpu)->Step(std::span<const SequenceStep>(&step, 1));
    ASSERT_TRUE(logits.ok()) << logits.status();
    const int32_t token = ArgMax(logits->Last(0));
    StatusOr<std::string> piece = stream.Push(token);
    ASSERT_TRUE(piece.ok()) << piece.status();
    text += *piece;
    tokens.push_back(token);
  }
  EXPECT_EQ(text.substr(0, sizeof(kKnownStory) - 1), kKnownStory) << text;
}

}  // namespace
}  // namespace bitfleet::worker

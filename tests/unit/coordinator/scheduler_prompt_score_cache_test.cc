// Scored prompts and the PromptScoreCache in the scheduler: a request repeating the beginning
// of a scored prompt reports those whole blocks' scores from the cache and shares their KV, and
// every score it reports is still the one its own context gives (the fake executor's scores
// depend on the context it reads back through the block table).
#include <string>
#include <vector>

#include "coordinator/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/scheduler_test_util.h"

namespace bitfleet::coordinator::testing {
namespace {

double HitTokens(Scheduler& scheduler) {
  return scheduler.metrics().AddCounter("bitfleet_prompt_score_cache_hit_tokens_total", "")->value();
}

// Blocks of 4, and rows enough to score a prompt in one chunk.
FakeExecutorOptions Replica(int32_t kv_blocks = 64) {
  return {.kv_blocks = kv_blocks, .block_size = 4, .max_step_tokens = 64, .max_step_sequences = 4,
          .max_logit_rows = 64};
}

// A 30-token context followed by 6 tokens of one of several continuations (lm-eval's
// multiple-choice requests): with blocks of 4, the context's whole blocks are 0-6 (tokens
// 0-27), and tokens 28-29 share block 7 with the continuation.
std::vector<int32_t> Choice(int continuation) {
  std::vector<int32_t> prompt = MakePrompt(30, 77);
  for (int32_t token : MakePrompt(6, 100 + continuation)) prompt.push_back(token);
  return prompt;
}

TEST(SchedulerPromptScoreCacheTest, ARepeatedBeginningIsReportedFromTheCacheAndItsKvShared) {
  FakeExecutor executor(Replica());
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 0, Choice(0), 1, /*top=*/2)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(HitTokens(*scheduler), 0);
  const size_t plans_before = executor.plans().size();
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 1, Choice(1), 1, /*top=*/2)).ok());
  RunUntilIdle(*scheduler);

  const Outcome out = collector.Get(1);
  ASSERT_TRUE(out.status.ok()) << out.status;
  ExpectPromptScored(out, Choice(1), 2);
  EXPECT_EQ(out.tokens, ExpectedTokens(HashNextToken(1000), Choice(1), 1));
  // Tokens 1-27 came from the cache; the KV of blocks 0-5 was shared (token 28's score needs
  // the logits at 27, so block 6 is computed again).
  EXPECT_EQ(HitTokens(*scheduler), 27);
  EXPECT_EQ(out.usage.cached_prompt_tokens, 24);
  EXPECT_EQ(out.usage.prefilled_tokens, 36 - 24);
  const std::vector<StepPlan> plans = executor.plans();
  ASSERT_EQ(plans.size(), plans_before + 1);
  const SequencePlan& step = plans.back().sequences.at(0);
  EXPECT_EQ(step.start_pos, 24);
  EXPECT_EQ(step.score_tokens.size(), 11u) << "positions 24-34; 24-26 score tokens reported already";
  EXPECT_NE(scheduler->RenderPrometheus().find("bitfleet_prompt_score_cache_bytes "), std::string::npos);
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

TEST(SchedulerPromptScoreCacheTest, AlternativesBeyondTheKeptOnesAreComputedAndKeptInstead) {
  FakeExecutor executor(Replica());
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 0, Choice(0), 1, /*top=*/1)).ok());
  RunUntilIdle(*scheduler);
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 1, Choice(1), 1, /*top=*/3)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(HitTokens(*scheduler), 0);
  EXPECT_EQ(collector.Get(1).usage.prefilled_tokens, 36);
  ExpectPromptScored(collector.Get(1), Choice(1), 3);
  // The three alternatives now kept serve a request for none.
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 2, Choice(2), 1, /*top=*/0)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(HitTokens(*scheduler), 27);
  ExpectPromptScored(collector.Get(2), Choice(2), 0);
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

TEST(SchedulerPromptScoreCacheTest, TenantsDoNotShareScores) {
  FakeExecutor executor(Replica());
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 0, Choice(0), 1, 0, "tenant-a")).ok());
  RunUntilIdle(*scheduler);
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 1, Choice(1), 1, 0, "tenant-b")).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(HitTokens(*scheduler), 0);
  EXPECT_EQ(collector.Get(1).usage.prefilled_tokens, 36);
  ExpectPromptScored(collector.Get(1), Choice(1), 0);
}

TEST(SchedulerPromptScoreCacheTest, OffWithABudgetOfZeroOrWithoutPrefixCaching) {
  for (const bool prefix_caching : {true, false}) {
    FakeExecutor executor(Replica());
    SchedulerOptions options = TestOptions();
    options.prefix_caching = prefix_caching;
    if (prefix_caching) options.prompt_score_cache_bytes = 0;
    auto scheduler = MakeScheduler(options, {&executor});
    Collector collector;
    ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 0, Choice(0), 1, 1)).ok());
    RunUntilIdle(*scheduler);
    ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 1, Choice(1), 1, 1)).ok());
    RunUntilIdle(*scheduler);
    EXPECT_EQ(HitTokens(*scheduler), 0) << prefix_caching;
    EXPECT_EQ(collector.Get(1).usage.prefilled_tokens, 36) << prefix_caching;
    ExpectPromptScored(collector.Get(1), Choice(1), 1);
  }
  SchedulerOptions bad = TestOptions();
  bad.prompt_score_cache_bytes = -1;
  FakeExecutor executor({});
  EXPECT_EQ(Scheduler::Create(bad, {&executor}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Scores kept, KV evicted: the positions before the first unreported score are fed without
// scoring (one logit row), then scoring resumes where the cache ended.
TEST(SchedulerPromptScoreCacheTest, CachedScoresWithoutTheirKvFeedTheirPositionsUnscored) {
  FakeExecutor executor(Replica(/*kv_blocks=*/16));
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 0, Choice(0), 1, 1)).ok());
  RunUntilIdle(*scheduler);
  // 61 positions: every block of the pool, so the context's cached blocks are evicted.
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(60, 5), 2)).ok());
  RunUntilIdle(*scheduler);
  const size_t plans_before = executor.plans().size();
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 2, Choice(2), 1, 1)).ok());
  RunUntilIdle(*scheduler);

  const Outcome out = collector.Get(2);
  ASSERT_TRUE(out.status.ok()) << out.status;
  ExpectPromptScored(out, Choice(2), 1);
  EXPECT_EQ(HitTokens(*scheduler), 27);
  EXPECT_EQ(out.usage.cached_prompt_tokens, 0);
  const std::vector<StepPlan> plans = executor.plans();
  ASSERT_EQ(plans.size(), plans_before + 2);
  const SequencePlan& unscored = plans[plans_before].sequences.at(0);
  EXPECT_EQ(unscored.tokens.size(), 27u);
  EXPECT_TRUE(unscored.score_tokens.empty());
  const SequencePlan& scored = plans[plans_before + 1].sequences.at(0);
  EXPECT_EQ(scored.start_pos, 27);
  EXPECT_EQ(scored.score_tokens.size(), 8u);
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

// Four choices at once: the first computes the context; the others wait the steps until its
// blocks' scores are kept, then take them, instead of all computing the same context.
TEST(SchedulerPromptScoreCacheTest, ABurstOnOneContextComputesItOnce) {
  // Budget and rows for all four to start in one step.
  FakeExecutor executor({.kv_blocks = 64, .block_size = 4, .max_step_tokens = 160, .max_step_sequences = 8,
                         .max_logit_rows = 160});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  for (int c = 0; c < 4; ++c) ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, c, Choice(c), 1, 1)).ok());
  RunUntilIdle(*scheduler);
  int64_t prefilled = 0;
  for (int c = 0; c < 4; ++c) {
    const Outcome out = collector.Get(c);
    ASSERT_TRUE(out.status.ok()) << out.status;
    ExpectPromptScored(out, Choice(c), 1);
    EXPECT_EQ(out.tokens, ExpectedTokens(HashNextToken(1000), Choice(c), 1));
    prefilled += out.usage.prefilled_tokens;
  }
  // The first computes 36 tokens; each other one block of the context and its own 8.
  EXPECT_EQ(prefilled, 36 + 3 * 12);
  EXPECT_EQ(HitTokens(*scheduler), 3 * 27);
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

}  // namespace
}  // namespace bitfleet::coordinator::testing

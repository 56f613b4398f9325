// Prompt scoring (GenerateRequest::prompt_logprobs) against the fake executor, whose scores
// depend on the context it reads back through the block table (FakePromptLogprob): every prompt
// token after the first is reported exactly once, in order, before the first generated token,
// with the value its own context gives, however the prompt is chunked, cached or preempted.
#include <algorithm>
#include <memory>
#include <vector>

#include "coordinator/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/scheduler_test_util.h"

namespace bitfleet::coordinator::testing {
namespace {

TEST(SchedulerPromptLogprobsTest, EveryPromptTokenIsScoredOnceAndTheCacheIsNotUsed) {
  FakeExecutor executor({.kv_blocks = 64, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 6});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(30, 11);
  // The same prompt, cached by an earlier request.
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, prompt, 2)).ok());
  RunUntilIdle(*scheduler);
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 1, prompt, 3, /*top=*/2)).ok());
  // Two streams decoding meanwhile take a logit row each.
  for (int i = 2; i < 4; ++i) ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, MakePrompt(5, i), 12)).ok());
  RunUntilIdle(*scheduler);

  const Outcome out = collector.Get(1);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, ExpectedTokens(HashNextToken(1000), prompt, 3));
  EXPECT_EQ(out.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(out.usage.prefilled_tokens, 30);
  ExpectPromptScored(out, prompt, 2);
  EXPECT_TRUE(collector.Get(0).scored.empty());
  for (int i = 2; i < 4; ++i) {
    EXPECT_EQ(collector.Get(i).tokens, ExpectedTokens(HashNextToken(1000), MakePrompt(5, i), 12)) << i;
  }

  // The fake refuses a plan of more than 6 logit rows, so the scored chunks had to share them.
  int scored_steps = 0;
  for (const StepPlan& plan : executor.plans()) {
    for (const SequencePlan& seq : plan.sequences) {
      if (seq.score_tokens.empty()) continue;
      ++scored_steps;
      EXPECT_LE(seq.tokens.size(), 6u);
      // Row j scores the token that follows tokens[j].
      for (size_t j = 0; j < seq.score_tokens.size(); ++j) {
        EXPECT_EQ(seq.score_tokens[j], prompt[static_cast<size_t>(seq.start_pos) + j + 1]);
      }
    }
  }
  EXPECT_GE(scored_steps, 5);
  // A scoring request looked nothing up: the hit rate is the other requests' alone.
  EXPECT_NE(scheduler->RenderPrometheus().find("bitfleet_prefix_cache_lookup_tokens_total 40"), std::string::npos);
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

TEST(SchedulerPromptLogprobsTest, APreemptedScoringRequestReportsNothingTwice) {
  // 10 blocks of 4 = 40 positions: the older request's 35 positions and the scoring one's 23
  // cannot both stay, and the newest is preempted while its prompt is scored 3 rows a step.
  FakeExecutor executor({.kv_blocks = 10, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 4});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int32_t> older = MakePrompt(24, 3);
  const std::vector<int32_t> prompt = MakePrompt(20, 4);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, older, 12)).ok());
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 1, prompt, 4, /*top=*/1)).ok());
  RunUntilIdle(*scheduler);

  const Outcome out = collector.Get(1);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_GT(out.usage.preemptions, 0);
  EXPECT_EQ(out.tokens, ExpectedTokens(HashNextToken(1000), prompt, 4));
  ExpectPromptScored(out, prompt, 1);
  EXPECT_EQ(collector.Get(0).tokens, ExpectedTokens(HashNextToken(1000), older, 12));
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

// A replica with more logit rows than sequences scores a prompt in larger chunks: the rows left
// after one per other sequence, while a plan still holds at most max_step_sequences sequences.
TEST(SchedulerPromptLogprobsTest, LogitRowsBoundTheScoredChunksAndSequencesThePlan) {
  FakeExecutor executor({.kv_blocks = 64,
                         .block_size = 4,
                         .max_step_tokens = 64,
                         .max_step_sequences = 4,
                         .max_logit_rows = 20});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, MakePrompt(4, i), 30)).ok());
  scheduler->RunIteration();  // the three prompts, admitted
  const std::vector<int32_t> prompt = MakePrompt(50, 21);
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 3, prompt, 2, /*top=*/0)).ok());
  RunUntilIdle(*scheduler);
  const Outcome out = collector.Get(3);
  ASSERT_TRUE(out.status.ok()) << out.status;
  ExpectPromptScored(out, prompt, 0);
  size_t largest = 0;
  for (const StepPlan& plan : executor.plans()) {
    EXPECT_LE(plan.sequences.size(), 4u);
    for (const SequencePlan& seq : plan.sequences) {
      if (!seq.score_tokens.empty()) largest = std::max(largest, seq.tokens.size());
    }
  }
  EXPECT_EQ(largest, 17u) << "the rows the three decoding sequences leave";
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

TEST(SchedulerPromptLogprobsTest, TopLogprobsNeedLogprobsOrPromptLogprobs) {
  FakeExecutor executor({});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  GenerateRequest request = MakeRequest(collector, 0, MakePrompt(5, 1), 2);
  request.sampling.top_logprobs = 2;
  const StatusOr<RequestId> refused = scheduler->Submit(std::move(request));
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("top_logprobs needs logprobs or prompt_logprobs"), std::string::npos);
  // A one-token prompt has nothing to score.
  ASSERT_TRUE(scheduler->Submit(ScoringRequest(collector, 1, {7}, 2, 0)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_TRUE(collector.Get(1).status.ok());
  EXPECT_TRUE(collector.Get(1).scored.empty());
  EXPECT_EQ(collector.Get(1).tokens.size(), 2u);
}

}  // namespace
}  // namespace bitfleet::coordinator::testing

// The scheduler against a fake executor that keeps a token-id KV cache (fake_executor.h): every
// generated text is compared with what the request produces alone, so batching, chunked
// prefill, prefix sharing and preemption must all leave the KV bookkeeping exactly right.
// Invariants are checked after every step (SchedulerOptions::check_invariants).
#include "coordinator/scheduler.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/scheduler_test_util.h"

namespace bitfleet::coordinator::testing {
namespace {

using std::chrono::milliseconds;

TEST(SchedulerTest, BatchedGenerationEqualsEachRequestAlone) {
  FakeExecutor executor({.kv_blocks = 256, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 8});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int> prompt_lens = {5, 40, 13, 1, 64, 7, 33, 2, 17, 50};
  const std::vector<int> max_tokens = {10, 5, 20, 8, 3, 12, 9, 15, 6, 11};
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < prompt_lens.size(); ++i) prompts.push_back(MakePrompt(prompt_lens[i], 100 + i));
  // Six now, four more while the first ones run: they join the running batch.
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, prompts[i], max_tokens[i])).ok());
  for (int it = 0; it < 3; ++it) scheduler->RunIteration();
  for (int i = 6; i < 10; ++i) ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, prompts[i], max_tokens[i])).ok());
  RunUntilIdle(*scheduler);

  const NextTokenFn next = HashNextToken(1000);
  for (int i = 0; i < 10; ++i) {
    const Outcome o = collector.Get(i);
    ASSERT_TRUE(o.finished) << i;
    EXPECT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.reason, FinishReason::kLength);
    EXPECT_EQ(o.tokens, ExpectedTokens(next, prompts[i], max_tokens[i])) << "request " << i;
    EXPECT_EQ(o.usage.prompt_tokens, prompt_lens[i]);
    EXPECT_EQ(o.usage.completion_tokens, max_tokens[i]);
    EXPECT_EQ(o.events_after_finish, 0);
  }
  bool batched = false, mixed = false, chunked = false;
  for (const StepPlan& plan : executor.plans()) {
    EXPECT_LE(TokensIn(plan), 32);
    EXPECT_LE(plan.sequences.size(), 8u);
    batched |= plan.sequences.size() >= 2;
    bool has_decode = false, has_prefill = false;
    for (const SequencePlan& seq : plan.sequences) {
      has_decode |= seq.tokens.size() == 1 && seq.sample_index > 0;
      has_prefill |= seq.tokens.size() > 1;
      chunked |= !seq.sample;
      EXPECT_EQ(seq.sample_index == 0 || seq.tokens.size() == 1 || !seq.sample, true);
    }
    mixed |= has_decode && has_prefill;
  }
  EXPECT_TRUE(batched);
  EXPECT_TRUE(mixed) << "no step mixed a decode with a prefill chunk";
  EXPECT_TRUE(chunked) << "the 64-token prompt exceeds the 32-token budget and must be chunked";
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
  const SchedulerStats stats = scheduler->Stats();
  EXPECT_EQ(stats.replicas[0].blocks.used, 0);
  EXPECT_EQ(stats.queued, 0);
}

TEST(SchedulerTest, NewRequestJoinsTheRunningBatch) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, MakePrompt(4, 1), 20)).ok());
  for (int it = 0; it < 3; ++it) ASSERT_TRUE(scheduler->RunIteration());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(9, 2), 5)).ok());
  ASSERT_TRUE(scheduler->RunIteration());
  const StepPlan last = executor.plans().back();
  ASSERT_EQ(last.sequences.size(), 2u);
  EXPECT_EQ(last.sequences[0].tokens.size(), 1u);  // the running request's decode
  EXPECT_EQ(last.sequences[0].sample_index, 3u);
  EXPECT_EQ(last.sequences[1].tokens.size(), 9u);  // the newcomer's prefill
  EXPECT_EQ(last.sequences[1].start_pos, 0);
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(0).tokens, ExpectedTokens(HashNextToken(1000), MakePrompt(4, 1), 20));
  EXPECT_EQ(collector.Get(1).tokens, ExpectedTokens(HashNextToken(1000), MakePrompt(9, 2), 5));
}

TEST(SchedulerTest, ChunkedPrefillSamplesOnlyAfterTheLastChunk) {
  FakeExecutor executor({.kv_blocks = 64, .max_step_tokens = 32});
  SchedulerOptions options = TestOptions();
  options.max_prefill_chunk = 10;
  auto scheduler = MakeScheduler(options, {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(35, 3);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, prompt, 2)).ok());
  RunUntilIdle(*scheduler);
  const std::vector<StepPlan> plans = executor.plans();
  ASSERT_EQ(plans.size(), 5u);  // chunks 10, 10, 10, 5 (samples), then one decode
  const std::vector<size_t> sizes = {10, 10, 10, 5, 1};
  for (size_t i = 0; i < plans.size(); ++i) {
    ASSERT_EQ(plans[i].sequences.size(), 1u);
    EXPECT_EQ(plans[i].sequences[0].tokens.size(), sizes[i]);
    EXPECT_EQ(plans[i].sequences[0].sample, i >= 3);
  }
  EXPECT_EQ(collector.Get(0).tokens, ExpectedTokens(HashNextToken(1000), prompt, 2));
  EXPECT_EQ(collector.Get(0).usage.prefilled_tokens, 35);
}

TEST(SchedulerTest, PrefixReuseSkipsRecomputeAndKeepsTheOutput) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(14, 4);  // 3 full blocks of 4 + 2 tokens
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, prompt, 5)).ok());
  RunUntilIdle(*scheduler);
  const Outcome cold = collector.Get(0);
  EXPECT_EQ(cold.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(cold.usage.prefilled_tokens, 14);
  EXPECT_GT(scheduler->Stats().replicas[0].blocks.cached, 0);

  const int64_t before = executor.tokens_executed();
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, prompt, 5)).ok());
  RunUntilIdle(*scheduler);
  const Outcome warm = collector.Get(1);
  EXPECT_EQ(warm.tokens, cold.tokens);
  EXPECT_EQ(warm.usage.cached_prompt_tokens, 12);
  EXPECT_EQ(warm.usage.prefilled_tokens, 2);
  EXPECT_EQ(executor.tokens_executed() - before, 2 + 4);  // 2 prompt tokens, then 4 decodes

  // A prompt sharing 9 tokens shares the 2 full blocks inside them.
  std::vector<int32_t> diverging(prompt.begin(), prompt.begin() + 9);
  const std::vector<int32_t> tail = MakePrompt(6, 99);
  diverging.insert(diverging.end(), tail.begin(), tail.end());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 2, diverging, 4)).ok());
  // A block-aligned prompt keeps its last block to compute: its last token's logits are needed.
  const std::vector<int32_t> aligned(prompt.begin(), prompt.begin() + 12);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 3, aligned, 4)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(2).usage.cached_prompt_tokens, 8);
  EXPECT_EQ(collector.Get(2).tokens, ExpectedTokens(HashNextToken(1000), diverging, 4));
  EXPECT_EQ(collector.Get(3).usage.cached_prompt_tokens, 8);
  EXPECT_EQ(collector.Get(3).tokens, ExpectedTokens(HashNextToken(1000), aligned, 4));
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
  EXPECT_NE(scheduler->RenderPrometheus().find("bitfleet_prefix_cache_hit_tokens_total 28"), std::string::npos)
      << scheduler->RenderPrometheus();
}

TEST(SchedulerTest, SharesBlocksWithARunningSequence) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(17, 5);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, prompt, 30)).ok());
  for (int it = 0; it < 3; ++it) scheduler->RunIteration();
  const int32_t used_alone = scheduler->Stats().replicas[0].blocks.used;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, prompt, 30)).ok());
  scheduler->RunIteration();
  // The newcomer holds the 4 shared prompt blocks (ref count 2) plus one of its own.
  EXPECT_EQ(scheduler->Stats().replicas[0].blocks.used, used_alone + 1);
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(1).usage.cached_prompt_tokens, 16);
  EXPECT_EQ(collector.Get(0).tokens, collector.Get(1).tokens);
  EXPECT_EQ(collector.Get(0).tokens, ExpectedTokens(HashNextToken(1000), prompt, 30));
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

// Four requests arriving together on one 40-token prefix (10 blocks) with 3 tokens each of their
// own: the step budget would admit all four at once, but the first computes the prefix and the
// others wait until its blocks are registered, then compute only their own tokens. A request of
// another tenant (its hashes differ) does not wait.
TEST(SchedulerTest, ABurstOnOnePrefixComputesItOnce) {
  FakeExecutor executor({.kv_blocks = 128, .block_size = 4, .max_step_tokens = 256, .max_step_sequences = 8});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int32_t> shared = MakePrompt(40, 7);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(shared);
    const std::vector<int32_t> own = MakePrompt(3, 50 + i);
    prompts.back().insert(prompts.back().end(), own.begin(), own.end());
    ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, prompts[i], 4)).ok());
  }
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 4, prompts[0], 4, "another-tenant")).ok());
  scheduler->RunIteration();
  // The first step: the first request and the other tenant's, whole.
  ASSERT_EQ(executor.plans().size(), 1u);
  EXPECT_EQ(TokensIn(executor.plans()[0]), 43 + 43);
  RunUntilIdle(*scheduler);
  int32_t prefilled = 0;
  for (int i = 0; i < 4; ++i) {
    const Outcome out = collector.Get(i);
    EXPECT_EQ(out.tokens, ExpectedTokens(HashNextToken(1000), prompts[i], 4)) << i;
    EXPECT_EQ(out.usage.cached_prompt_tokens, i == 0 ? 0 : 40) << i;
    prefilled += out.usage.prefilled_tokens;
  }
  EXPECT_EQ(prefilled, 43 + 3 * 3);
  EXPECT_EQ(collector.Get(4).usage.cached_prompt_tokens, 0);
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

TEST(SchedulerTest, TenantsWithDifferentSaltsShareNothing) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(14, 6);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, prompt, 3, "tenant-a")).ok());
  RunUntilIdle(*scheduler);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, prompt, 3, "tenant-b")).ok());
  RunUntilIdle(*scheduler);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 2, prompt, 3, "tenant-a")).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(1).usage.cached_prompt_tokens, 0);
  EXPECT_EQ(collector.Get(1).usage.prefilled_tokens, 14);
  EXPECT_EQ(collector.Get(2).usage.cached_prompt_tokens, 12);
  EXPECT_EQ(collector.Get(0).tokens, collector.Get(1).tokens);
  EXPECT_EQ(collector.Get(0).tokens, collector.Get(2).tokens);
}

TEST(SchedulerTest, PrefixCachingCanBeTurnedOff) {
  FakeExecutor executor({.kv_blocks = 64});
  SchedulerOptions options = TestOptions();
  options.prefix_caching = false;
  auto scheduler = MakeScheduler(options, {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(14, 7);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, prompt, 3)).ok());
    RunUntilIdle(*scheduler);
    EXPECT_EQ(collector.Get(i).usage.cached_prompt_tokens, 0);
  }
  EXPECT_EQ(scheduler->Stats().replicas[0].blocks.cached, 0);
}

TEST(SchedulerTest, PreemptionUnderATinyPoolKeepsOutputsExact) {
  // 12 blocks of 4 = 48 positions; four requests of up to 29 positions (8 blocks) each.
  FakeExecutor executor({.kv_blocks = 12, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 8});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(MakePrompt(10, 200 + i));
    ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, prompts[i], 20)).ok());
  }
  RunUntilIdle(*scheduler);
  int preemptions = 0;
  for (int i = 0; i < 4; ++i) {
    const Outcome o = collector.Get(i);
    ASSERT_TRUE(o.finished);
    EXPECT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.tokens, ExpectedTokens(HashNextToken(1000), prompts[i], 20)) << "request " << i;
    preemptions += o.usage.preemptions;
  }
  EXPECT_GT(preemptions, 0);
  EXPECT_EQ(collector.Get(0).usage.preemptions, 0) << "the oldest request is never the one preempted";
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
  EXPECT_NE(scheduler->RenderPrometheus().find("bitfleet_preemptions_total " + std::to_string(preemptions)),
            std::string::npos);
}

TEST(SchedulerTest, CancelFreesBlocksAtTheNextIteration) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  auto id = scheduler->Submit(MakeRequest(collector, 0, MakePrompt(20, 8), 100));
  ASSERT_TRUE(id.ok());
  for (int it = 0; it < 5; ++it) scheduler->RunIteration();
  EXPECT_GT(scheduler->Stats().replicas[0].blocks.used, 0);
  ASSERT_TRUE(scheduler->Cancel(*id).ok());
  scheduler->RunIteration();
  const Outcome o = collector.Get(0);
  ASSERT_TRUE(o.finished);
  EXPECT_EQ(o.reason, FinishReason::kCancelled);
  EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(o.tokens.size(), 5u);  // one per iteration before the cancel
  EXPECT_EQ(scheduler->Stats().replicas[0].blocks.used, 0);
  EXPECT_EQ(scheduler->Stats().live, 0);
  EXPECT_EQ(scheduler->Cancel(*id).code(), absl::StatusCode::kNotFound);
}

TEST(SchedulerTest, CancelWithStopReasonFinishesOk) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  auto id = scheduler->Submit(MakeRequest(collector, 0, MakePrompt(6, 9), 50));
  ASSERT_TRUE(id.ok());
  scheduler->RunIteration();
  EXPECT_EQ(scheduler->Cancel(*id, FinishReason::kLength).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(scheduler->Cancel(*id, FinishReason::kStop).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(0).reason, FinishReason::kStop);
  EXPECT_TRUE(collector.Get(0).status.ok());
}

TEST(SchedulerTest, DeadlineEndsTheRequestAndFreesBlocks) {
  FakeExecutor executor({.kv_blocks = 128});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  GenerateRequest request = MakeRequest(collector, 0, MakePrompt(20, 10), 400);
  request.deadline = Clock::now() + milliseconds(50);
  ASSERT_TRUE(scheduler->Submit(std::move(request)).ok());
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(30);
  while (!collector.Get(0).finished && Clock::now() < give_up) {
    scheduler->RunIteration();
    std::this_thread::sleep_for(milliseconds(2));
  }
  const Outcome o = collector.Get(0);
  ASSERT_TRUE(o.finished);
  EXPECT_EQ(o.reason, FinishReason::kDeadline);
  EXPECT_EQ(o.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(scheduler->Stats().replicas[0].blocks.used, 0);
}

// A client's cancel that arrives after the request's deadline (gRPC cancels a call whose
// deadline passed) ends the request as a deadline, not as a cancel.
TEST(SchedulerTest, CancelAfterTheDeadlineIsTheDeadline) {
  FakeExecutor executor({.kv_blocks = 128});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  GenerateRequest request = MakeRequest(collector, 0, MakePrompt(20, 11), 400);
  request.deadline = Clock::now() + milliseconds(30);
  auto id = scheduler->Submit(std::move(request));
  ASSERT_TRUE(id.ok());
  scheduler->RunIteration();
  std::this_thread::sleep_for(milliseconds(40));
  ASSERT_TRUE(scheduler->Cancel(*id).ok());
  scheduler->RunIteration();
  const Outcome o = collector.Get(0);
  ASSERT_TRUE(o.finished);
  EXPECT_EQ(o.reason, FinishReason::kDeadline);
  EXPECT_EQ(o.status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(SchedulerTest, FullAdmissionQueueIsResourceExhausted) {
  FakeExecutor executor({.kv_blocks = 64});
  SchedulerOptions options = TestOptions();
  options.max_queued_requests = 2;
  auto scheduler = MakeScheduler(options, {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, MakePrompt(5, 11), 3)).ok());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(5, 12), 3)).ok());
  EXPECT_EQ(scheduler->Submit(MakeRequest(collector, 2, MakePrompt(5, 13), 3)).status().code(),
            absl::StatusCode::kResourceExhausted);
  RunUntilIdle(*scheduler);
  EXPECT_TRUE(scheduler->Submit(MakeRequest(collector, 3, MakePrompt(5, 14), 3)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.finished(), 3);
  EXPECT_FALSE(collector.Get(2).finished);
  EXPECT_NE(scheduler->RenderPrometheus().find("bitfleet_requests_rejected_total{code=\"RESOURCE_EXHAUSTED\"} 1"),
            std::string::npos);
}

TEST(SchedulerTest, RejectsBadRequestsBeforeScheduling) {
  FakeExecutor executor({.kv_blocks = 16, .block_size = 4});  // 64 positions
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  auto code = [&](GenerateRequest request) { return scheduler->Submit(std::move(request)).status().code(); };
  using absl::StatusCode;
  EXPECT_EQ(code(MakeRequest(collector, 0, {}, 3)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest(collector, 0, {5, -1}, 3)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest(collector, 0, {5, 1000}, 3)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest(collector, 0, {5}, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest(collector, 0, MakePrompt(500, 1), 13)), StatusCode::kInvalidArgument);  // > context
  GenerateRequest bad_temp = MakeRequest(collector, 0, {5}, 3);
  bad_temp.sampling.temperature = std::nanf("");
  EXPECT_EQ(code(std::move(bad_temp)), StatusCode::kInvalidArgument);
  GenerateRequest bad_top_p = MakeRequest(collector, 0, {5}, 3);
  bad_top_p.sampling.top_p = 0.0f;
  EXPECT_EQ(code(std::move(bad_top_p)), StatusCode::kInvalidArgument);
  GenerateRequest no_sink = MakeRequest(collector, 0, {5}, 3);
  no_sink.sink = nullptr;
  EXPECT_EQ(code(std::move(no_sink)), StatusCode::kInvalidArgument);
  GenerateRequest late = MakeRequest(collector, 0, {5}, 3);
  late.deadline = Clock::now() - milliseconds(1);
  EXPECT_EQ(code(std::move(late)), StatusCode::kDeadlineExceeded);
  // 60 + 10 - 1 = 69 positions need 18 blocks of the pool's 16: larger than the whole pool.
  EXPECT_EQ(code(MakeRequest(collector, 0, MakePrompt(60, 2), 10)), StatusCode::kResourceExhausted);
  // 60 + 5 - 1 = 64 positions: exactly the pool.
  auto fits = scheduler->Submit(MakeRequest(collector, 1, MakePrompt(60, 2), 5));
  ASSERT_TRUE(fits.ok()) << fits.status();
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(1).tokens, ExpectedTokens(HashNextToken(1000), MakePrompt(60, 2), 5));
  EXPECT_EQ(collector.finished(), 1);
}

TEST(SchedulerTest, EndOfGenerationTokenStopsWithoutBeingStreamed) {
  constexpr int32_t kEos = 2;
  const int prompt_len = 7;
  NextTokenFn next = [hash = HashNextToken(1000)](std::span<const int32_t> context) {
    return context.size() >= 7 + 3 ? kEos : hash(context);
  };
  FakeExecutor executor({.kv_blocks = 64}, next);
  SchedulerOptions options = TestOptions();
  options.end_of_generation = {kEos};
  auto scheduler = MakeScheduler(options, {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(prompt_len, 15);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, prompt, 20)).ok());
  GenerateRequest ignoring = MakeRequest(collector, 1, prompt, 6);
  ignoring.ignore_eos = true;
  ASSERT_TRUE(scheduler->Submit(std::move(ignoring)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(0).reason, FinishReason::kStop);
  EXPECT_TRUE(collector.Get(0).status.ok());
  EXPECT_EQ(collector.Get(0).tokens, ExpectedTokens(next, prompt, 20, {kEos}));
  EXPECT_EQ(collector.Get(0).tokens.size(), 3u);
  EXPECT_EQ(collector.Get(1).reason, FinishReason::kLength);
  EXPECT_EQ(collector.Get(1).tokens, ExpectedTokens(next, prompt, 6));
  EXPECT_EQ(collector.Get(1).tokens[3], kEos);
}

TEST(SchedulerTest, ReplicaFailureFailsItsRequestsAndForgetsItsKv) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, MakePrompt(9, 16), 30)).ok());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(9, 17), 30)).ok());
  for (int it = 0; it < 3; ++it) scheduler->RunIteration();
  executor.FailNextSteps(1, absl::UnavailableError("rank 1 died"));
  scheduler->RunIteration();
  for (int i = 0; i < 2; ++i) {
    const Outcome o = collector.Get(i);
    ASSERT_TRUE(o.finished);
    EXPECT_EQ(o.reason, FinishReason::kError);
    EXPECT_EQ(o.status.code(), absl::StatusCode::kUnavailable);
  }
  const ReplicaStats stats = scheduler->Stats().replicas[0];
  EXPECT_EQ(stats.blocks.used + stats.blocks.cached, 0);
  // A restarted replica: its KV is gone, and nothing may be reused from before.
  executor.WipeKv();
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 2, MakePrompt(9, 16), 5)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_TRUE(collector.Get(2).status.ok()) << collector.Get(2).status;
  EXPECT_EQ(collector.Get(2).usage.cached_prompt_tokens, 0);
  EXPECT_EQ(collector.Get(2).tokens, ExpectedTokens(HashNextToken(1000), MakePrompt(9, 16), 5));
}

TEST(SchedulerTest, RejectedPlanFailsOnlyItsSequences) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, MakePrompt(5, 18), 4)).ok());
  executor.FailNextSteps(1, absl::InvalidArgumentError("bad plan"));
  scheduler->RunIteration();
  EXPECT_EQ(collector.Get(0).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(scheduler->replica_healthy(0));
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(5, 19), 4)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_TRUE(collector.Get(1).status.ok());
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

TEST(SchedulerTest, UnhealthyReplicaFailsRequestsAndRefusesNewOnes) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, MakePrompt(5, 20), 40)).ok());
  scheduler->RunIteration();
  EXPECT_TRUE(scheduler->serving());
  executor.set_healthy(false);
  scheduler->RunIteration();
  EXPECT_EQ(collector.Get(0).status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(scheduler->serving());
  EXPECT_FALSE(scheduler->replica_healthy(0));
  EXPECT_EQ(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(5, 21), 4)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_NE(scheduler->RenderPrometheus().find("bitfleet_replica_healthy{replica=\"0\"} 0"), std::string::npos);
  executor.set_healthy(true);
  executor.WipeKv();
  scheduler->RunIteration();
  EXPECT_TRUE(scheduler->serving());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 2, MakePrompt(5, 20), 4)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(2).tokens, ExpectedTokens(HashNextToken(1000), MakePrompt(5, 20), 4));
}

TEST(SchedulerTest, ReplicaRestartedInPlaceIsNotServedFromStaleCache) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  const std::vector<int32_t> prompt = MakePrompt(14, 22);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, prompt, 3)).ok());
  RunUntilIdle(*scheduler);
  ASSERT_GT(scheduler->Stats().replicas[0].blocks.cached, 0);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(6, 23), 50)).ok());
  scheduler->RunIteration();
  executor.Restart();  // healthy throughout, but its KV is gone
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 2, prompt, 3)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(1).status.code(), absl::StatusCode::kUnavailable);
  const Outcome o = collector.Get(2);
  EXPECT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(o.tokens, collector.Get(0).tokens);
}

TEST(SchedulerTest, RouterSendsARequestToTheReplicaHoldingItsPrefix) {
  FakeExecutor replica0({.kv_blocks = 64});
  FakeExecutor replica1({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&replica0, &replica1});
  Collector collector;
  const std::vector<int32_t> shared = MakePrompt(20, 30);
  // A long request occupies replica 0, so the first shared-prefix request lands on replica 1.
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 0, MakePrompt(40, 31), 3)).ok());
  scheduler->RunIteration();
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, shared, 3)).ok());
  RunUntilIdle(*scheduler);
  const int64_t replica1_before = replica1.tokens_executed();
  ASSERT_GT(replica1_before, 0);
  // Both idle now: the prefix decides.
  std::vector<int32_t> extended = shared;
  extended.push_back(7);
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 2, extended, 3)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_EQ(collector.Get(2).usage.cached_prompt_tokens, 20);
  EXPECT_GT(replica1.tokens_executed(), replica1_before);
  // A prompt nobody holds goes to the lower index on a tie.
  const int64_t replica0_before = replica0.tokens_executed();
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 3, MakePrompt(20, 32), 3)).ok());
  RunUntilIdle(*scheduler);
  EXPECT_GT(replica0.tokens_executed(), replica0_before);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(collector.Get(i).status.ok()) << i;
}

TEST(SchedulerTest, MetricsReflectTheWork) {
  FakeExecutor executor({.kv_blocks = 64});
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  Collector collector;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, MakePrompt(6, 40 + i), 4)).ok());
  }
  RunUntilIdle(*scheduler);
  const std::string text = scheduler->RenderPrometheus();
  for (const char* line : {"bitfleet_queue_depth 0", "bitfleet_running_sequences 0",
                           "bitfleet_kv_blocks{replica=\"0\",state=\"used\"} 0",
                           "bitfleet_replica_healthy{replica=\"0\"} 1", "bitfleet_generated_tokens_total 12",
                           "bitfleet_prefill_tokens_total 18", "bitfleet_time_to_first_token_seconds_count 3",
                           "bitfleet_inter_token_latency_seconds_count 9",
                           "bitfleet_request_queue_seconds_count 3", "bitfleet_request_prefill_seconds_count 3",
                           "bitfleet_requests_finished_total{reason=\"length\"} 3",
                           "# TYPE bitfleet_time_to_first_token_seconds histogram"}) {
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  }
  // Queueing and prefill split each request's TTFT: their sums add up to the TTFT sum.
  const auto sum_of = [&text](const std::string& name) {
    const std::string key = name + "_sum ";
    const size_t at = text.find(key);
    EXPECT_NE(at, std::string::npos) << name;
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + key.size()));
  };
  const double ttft = sum_of("bitfleet_time_to_first_token_seconds");
  EXPECT_GT(ttft, 0.0);
  EXPECT_NEAR(sum_of("bitfleet_request_queue_seconds") + sum_of("bitfleet_request_prefill_seconds"), ttft,
              1e-9 + 1e-9 * ttft);
}

TEST(SchedulerTest, ThreadedLoopServesConcurrentSubmitters) {
  FakeExecutor executor({.kv_blocks = 96, .block_size = 4, .max_step_tokens = 48, .max_step_sequences = 8});
  SchedulerOptions options = TestOptions();
  options.max_queued_requests = 64;
  auto scheduler = MakeScheduler(options, {&executor});
  scheduler->Start();
  Collector collector;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        const int key = t * 8 + i;
        EXPECT_TRUE(scheduler->Submit(MakeRequest(collector, key, MakePrompt(3 + key % 11, key), 6 + key % 5)).ok());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_TRUE(collector.WaitFinished(32));
  for (int key = 0; key < 32; ++key) {
    EXPECT_EQ(collector.Get(key).tokens, ExpectedTokens(HashNextToken(1000), MakePrompt(3 + key % 11, key), 6 + key % 5))
        << key;
  }
  EXPECT_TRUE(scheduler->Drain(Clock::now() + std::chrono::seconds(10)).ok());
  EXPECT_EQ(scheduler->Submit(MakeRequest(collector, 99, {5}, 2)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(scheduler->serving());
  scheduler->Stop();
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
  EXPECT_EQ(collector.Get(0).events_after_finish, 0);
}

TEST(SchedulerTest, DrainPastItsDeadlineEndsTheRestUnavailable) {
  NextTokenFn slow = [hash = HashNextToken(1000)](std::span<const int32_t> context) {
    std::this_thread::sleep_for(milliseconds(5));
    return hash(context);
  };
  FakeExecutor executor({.kv_blocks = 256}, slow);
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  scheduler->Start();
  Collector collector;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, MakePrompt(5, 50 + i), 400)).ok());
  const Status drained = scheduler->Drain(Clock::now() + milliseconds(100));
  EXPECT_EQ(drained.code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_EQ(collector.finished(), 3);  // delivered before Drain returned
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(collector.Get(i).reason, FinishReason::kCancelled);
    EXPECT_EQ(collector.Get(i).status.code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(scheduler->Stats().replicas[0].blocks.used, 0);
}

TEST(SchedulerTest, StopEndsEveryRequestExactlyOnce) {
  NextTokenFn slow = [hash = HashNextToken(1000)](std::span<const int32_t> context) {
    std::this_thread::sleep_for(milliseconds(2));
    return hash(context);
  };
  FakeExecutor executor({.kv_blocks = 512}, slow);
  auto scheduler = MakeScheduler(TestOptions(), {&executor});
  scheduler->Start();
  Collector collector;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, i, MakePrompt(5, 60 + i), 400)).ok());
  std::this_thread::sleep_for(milliseconds(20));
  scheduler->Stop();
  EXPECT_EQ(collector.finished(), 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(collector.Get(i).status.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(collector.Get(i).events_after_finish, 0);
  }
  scheduler.reset();  // a second Stop (the destructor) is a no-op
  EXPECT_EQ(collector.finished(), 4);
}

TEST(SchedulerTest, CreateRejectsBadOptions) {
  FakeExecutor executor({});
  SchedulerOptions options = TestOptions();
  EXPECT_EQ(Scheduler::Create(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(options, {nullptr}).status().code(), absl::StatusCode::kInvalidArgument);
  options.model_id = "";
  EXPECT_EQ(Scheduler::Create(options, {&executor}).status().code(), absl::StatusCode::kInvalidArgument);
  // A replica whose block size differs from the scheduler's is never used.
  SchedulerOptions other_block = TestOptions(8);
  auto scheduler = Scheduler::Create(other_block, {&executor});
  ASSERT_TRUE(scheduler.ok());
  EXPECT_FALSE((*scheduler)->serving());
}

}  // namespace
}  // namespace bitfleet::coordinator::testing

// Speculative decoding by prompt lookup: the draft proposer, and the scheduler feeding drafts to
// the fake executor (fake_executor.h), which samples after each draft from the context it reads
// back through the block table. Every text must equal what the request generates alone without
// drafts: a draft kept that the model did not generate, a rejected draft's KV counted as
// computed, or a token lost at a rejection changes it.
#include <map>
#include <memory>
#include <random>
#include <set>
#include <unordered_set>

#include "coordinator/draft_index.h"
#include "coordinator/draft_proposer.h"
#include "coordinator/output_constraint.h"
#include "coordinator/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/scheduler_test_util.h"

namespace bitfleet::coordinator::testing {
namespace {

std::vector<int32_t> Draft(const std::vector<int32_t>& tokens, int32_t max_tokens, int32_t min_ngram = 2,
                           int32_t max_ngram = 3) {
  DraftOptions options{.max_tokens = max_tokens, .max_ngram = max_ngram, .min_ngram = min_ngram};
  std::vector<int32_t> draft = {99};  // replaced, never appended to
  ProposeDraft(tokens, options, max_tokens, &draft);
  return draft;
}

TEST(DraftProposerTest, CopiesWhatFollowedTheLatestEarlierOccurrence) {
  // The tail (7, 8) occurs at 1 and at 5: the latest, at 5, is followed by 4, 5.
  EXPECT_EQ(Draft({6, 7, 8, 1, 2, 7, 8, 4, 5, 7, 8}, 4), (std::vector<int32_t>{4, 5, 7, 8}));
  EXPECT_EQ(Draft({6, 7, 8, 1, 2, 7, 8, 4, 5, 7, 8}, 2), (std::vector<int32_t>{4, 5}));
  // A match near the end continues with its period.
  EXPECT_EQ(Draft({1, 2, 3, 1, 2, 3, 1, 2}, 5), (std::vector<int32_t>{3, 1, 2, 3, 1}));
  EXPECT_EQ(Draft({5, 5, 5}, 4), (std::vector<int32_t>{5, 5, 5, 5}));
  EXPECT_EQ(Draft({9, 4, 6, 9, 4}, 5), (std::vector<int32_t>{6, 9, 4, 6, 9}));
}

TEST(DraftProposerTest, TheLongestMatchingTailWins) {
  // Tail 3: (1, 2, 3) at 0, followed by 10. Tail 2 alone would take the later (2, 3) at 5 (20).
  const std::vector<int32_t> tokens = {1, 2, 3, 10, 9, 2, 3, 20, 1, 2, 3};
  EXPECT_EQ(Draft(tokens, 1), (std::vector<int32_t>{10}));
  EXPECT_EQ(Draft(tokens, 1, 2, 2), (std::vector<int32_t>{20}));
}

TEST(DraftProposerTest, NothingWithoutAMatchOrBudget) {
  EXPECT_TRUE(Draft({1, 2, 3, 4, 5}, 4).empty());
  EXPECT_TRUE(Draft({1, 2, 1, 2}, 0).empty());
  EXPECT_TRUE(Draft({}, 4).empty());
  EXPECT_TRUE(Draft({7}, 4).empty());
  // (3, 4) occurs only as the tail itself; the single token 4 occurred before.
  EXPECT_TRUE(Draft({4, 9, 3, 4}, 4).empty());
  EXPECT_EQ(Draft({4, 9, 3, 4}, 4, 1), (std::vector<int32_t>{9, 3, 4, 9}));
}

TEST(DraftProposerTest, OptionErrors) {
  EXPECT_STREQ(DraftOptionsError(DraftOptions{}), "");
  EXPECT_STRNE(DraftOptionsError(DraftOptions{.max_tokens = -1}), "");
  EXPECT_STRNE(DraftOptionsError(DraftOptions{.max_tokens = kMaxDraftTokens + 1}), "");
  EXPECT_STRNE(DraftOptionsError(DraftOptions{.max_ngram = 2, .min_ngram = 3}), "");
  EXPECT_STRNE(DraftOptionsError(DraftOptions{.max_ngram = 3, .min_ngram = 0}), "");
  EXPECT_STRNE(DraftOptionsError(DraftOptions{.max_batch = 0}), "");
}

// The index against the scan it replaces, as random sequences grow token by token (sometimes
// several at once): small alphabets (many matches, tails that recur), n-gram ranges, draft
// lengths, and hashes narrowed to 3 bits so that most hits collide and must be checked.
TEST(DraftIndexTest, ProposesExactlyWhatTheScanDoes) {
  std::mt19937 rng(7);
  int64_t drafts = 0;
  for (int round = 0; round < 24; ++round) {
    const int alphabet = 2 + static_cast<int>(rng() % 40);
    const int32_t min_n = 1 + static_cast<int32_t>(rng() % 3);
    const int32_t max_n = min_n + static_cast<int32_t>(rng() % 3);
    const DraftOptions options{.max_tokens = 8, .max_ngram = max_n, .min_ngram = min_n};
    // Indexed a few positions per call: the scan answers until the index has caught up.
    DraftIndex index(/*scan_below=*/static_cast<size_t>(rng() % 64), /*index_per_call=*/1 + rng() % 8,
                     round % 2 == 0 ? 0x7 : ~uint64_t{0});
    std::vector<int32_t> tokens;
    std::vector<int32_t> want, got;
    for (int i = 0; i < 700; ++i) {
      // Stretches copied from earlier, as generated text does, between random tokens.
      for (int k = rng() % 4 == 0 ? 3 : 1; k > 0; --k) {
        if (!tokens.empty() && rng() % 3 == 0) {
          tokens.push_back(tokens[rng() % tokens.size()]);
        } else {
          tokens.push_back(static_cast<int32_t>(rng() % alphabet));
        }
      }
      const int32_t max_tokens = static_cast<int32_t>(rng() % 6);
      ProposeDraft(tokens, options, max_tokens, &want);
      index.Propose(tokens, options, max_tokens, &got);
      ASSERT_EQ(got, want) << "round " << round << " at " << tokens.size() << " tokens";
      drafts += want.empty() ? 0 : 1;
    }
  }
  EXPECT_GT(drafts, 1000);
}

TEST(DraftAcceptanceTest, FeedsWhatItsRecordIsWorth) {
  DraftAcceptance acceptance;
  EXPECT_FLOAT_EQ(acceptance.chance(), 0.5f);
  EXPECT_EQ(acceptance.Worth(4, 0.35f), 1) << "a new sequence tries one token (0.5, then 0.25)";
  EXPECT_EQ(acceptance.Worth(4, 0.0f), 4);
  EXPECT_EQ(acceptance.Worth(0, 0.0f), 0);
  for (int i = 0; i < 10; ++i) acceptance.Record(4, 4);
  EXPECT_GT(acceptance.chance(), 0.9f);
  EXPECT_EQ(acceptance.Worth(4, 0.35f), 4);
  EXPECT_EQ(acceptance.Worth(3, 0.35f), 3);
  for (int i = 0; i < 20; ++i) acceptance.Record(1, 0);  // the text changed: every guess wrong
  EXPECT_LT(acceptance.chance(), 0.1f);
  EXPECT_EQ(acceptance.Worth(4, 0.35f), 0);
  for (int i = 0; i < 10; ++i) acceptance.Record(1, 1);  // probes right again
  EXPECT_EQ(acceptance.Worth(4, 0.35f), 4);
  acceptance.Record(0, 0);  // nothing tried: no change
  EXPECT_EQ(acceptance.Worth(4, 0.35f), 4);
}

// A model whose text mostly repeats itself with period `period` (what drafts guess right) and
// otherwise, one time in five, takes the context's hash (where they fail).
NextTokenFn RepetitiveNext(size_t period) {
  return [period, hash = HashNextToken(1000)](std::span<const int32_t> context) {
    const int32_t h = hash(context);
    return context.size() < period || h % 5 == 0 ? h : context[context.size() - period];
  };
}

SchedulerOptions SpeculativeOptions(int32_t max_tokens = 4, int32_t max_batch = 8) {
  SchedulerOptions options = TestOptions();
  options.speculative = {
      .max_tokens = max_tokens, .max_ngram = 3, .min_ngram = 2, .max_batch = max_batch, .min_keep_chance = 0.0f};
  return options;
}

struct SpecRun {
  std::vector<Outcome> outcomes;
  std::vector<StepPlan> plans;
  SchedulerStats stats;
  Status invariants;
  std::string metrics;
};

// Runs `prompts` (max_tokens each) on one fake replica under `options`, the first `first_batch`
// at once and the rest after two iterations (they join running batches).
SpecRun RunAll(const SchedulerOptions& options, const FakeExecutorOptions& replica, const NextTokenFn& next,
           const std::vector<std::vector<int32_t>>& prompts, const std::vector<int>& max_tokens,
           size_t first_batch) {
  FakeExecutor executor(replica, next);
  auto scheduler = MakeScheduler(options, {&executor});
  Collector collector;
  SpecRun run;
  if (scheduler == nullptr) return run;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (i == first_batch) {
      for (int it = 0; it < 2; ++it) scheduler->RunIteration();
    }
    EXPECT_TRUE(scheduler->Submit(MakeRequest(collector, static_cast<int>(i), prompts[i], max_tokens[i])).ok());
  }
  RunUntilIdle(*scheduler);
  for (size_t i = 0; i < prompts.size(); ++i) run.outcomes.push_back(collector.Get(static_cast<int>(i)));
  run.plans = executor.plans();
  run.stats = scheduler->Stats();
  run.invariants = scheduler->invariant_status();
  run.metrics = scheduler->RenderPrometheus();
  return run;
}

std::vector<std::vector<int32_t>> RepetitivePrompts(int n, int length) {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n; ++i) prompts.push_back(MakePrompt(length, 700 + i));
  return prompts;
}

TEST(SchedulerSpeculativeTest, DraftsLeaveEveryTextAsGeneratedAlone) {
  const NextTokenFn next = RepetitiveNext(6);
  const std::vector<std::vector<int32_t>> prompts = RepetitivePrompts(6, 9);
  const std::vector<int> max_tokens = {40, 25, 33, 17, 48, 29};
  const FakeExecutorOptions replica{.kv_blocks = 256, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 8};
  const SpecRun plain = RunAll(TestOptions(), replica, next, prompts, max_tokens, 3);
  const SpecRun spec = RunAll(SpeculativeOptions(), replica, next, prompts, max_tokens, 3);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Outcome& o = spec.outcomes[i];
    ASSERT_TRUE(o.finished) << i;
    EXPECT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.reason, FinishReason::kLength);
    EXPECT_EQ(o.tokens, ExpectedTokens(next, prompts[i], max_tokens[i])) << "request " << i;
    EXPECT_EQ(o.tokens, plain.outcomes[i].tokens) << "request " << i;
    EXPECT_EQ(o.usage.completion_tokens, max_tokens[i]);
    EXPECT_EQ(o.events_after_finish, 0);
  }
  EXPECT_TRUE(spec.invariants.ok()) << spec.invariants;
  EXPECT_EQ(spec.stats.replicas[0].blocks.used, 0);
  const ReplicaStats& r = spec.stats.replicas[0];
  EXPECT_GT(r.accepted_draft_tokens, 0);
  EXPECT_LT(r.accepted_draft_tokens, r.draft_tokens) << "the model's noise should reject some drafts";
  EXPECT_LT(spec.plans.size(), plain.plans.size()) << "kept drafts save steps";
  EXPECT_EQ(plain.stats.replicas[0].draft_tokens, 0);
  bool drafted = false;
  for (const StepPlan& plan : spec.plans) {
    int64_t rows = 0;
    for (const SequencePlan& seq : plan.sequences) {
      EXPECT_LE(seq.draft_tokens, 4);
      EXPECT_TRUE(seq.draft_tokens == 0 || seq.tokens.size() == static_cast<size_t>(seq.draft_tokens) + 1)
          << "drafts ride on decodes only";
      rows += 1 + seq.draft_tokens;
      drafted |= seq.draft_tokens > 0;
    }
    EXPECT_LE(TokensIn(plan), 32);
    EXPECT_LE(rows, 8) << "a drafting sequence takes a logit row per draft";
  }
  EXPECT_TRUE(drafted);
  EXPECT_NE(spec.metrics.find("bitfleet_speculative_draft_tokens_total " + std::to_string(r.draft_tokens)),
            std::string::npos);
  EXPECT_NE(spec.metrics.find("bitfleet_speculative_accepted_tokens_total " + std::to_string(r.accepted_draft_tokens)),
            std::string::npos);
}

TEST(SchedulerSpeculativeTest, KeptDraftsStopAtMaxTokensAndAtTheEndToken) {
  constexpr int32_t kEos = 2;
  // The prompt holds the end token, so drafts carry it: the output copies it and stops there.
  std::vector<int32_t> with_end = MakePrompt(5, 30);
  with_end.push_back(kEos);
  for (int i = 0; i < 6; ++i) with_end.push_back(with_end[static_cast<size_t>(i)]);
  // Always the period: every draft is right, so only max_tokens and the end token stop a run.
  const size_t period = 6;
  const NextTokenFn next = [period](std::span<const int32_t> context) { return context[context.size() - period]; };
  const FakeExecutorOptions replica{.kv_blocks = 64, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 8};
  SchedulerOptions options = SpeculativeOptions(8);
  options.end_of_generation = {kEos};
  const std::vector<std::vector<int32_t>> prompts = {MakePrompt(12, 31), MakePrompt(12, 32), with_end};
  const std::vector<int> max_tokens = {3, 11, 40};
  const SpecRun run = RunAll(options, replica, next, prompts, max_tokens, 3);
  ASSERT_EQ(run.outcomes.size(), 3u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(run.outcomes[i].reason, FinishReason::kLength);
    EXPECT_EQ(run.outcomes[i].tokens, ExpectedTokens(next, prompts[i], max_tokens[i]));
    EXPECT_EQ(run.outcomes[i].usage.completion_tokens, max_tokens[i]);
  }
  EXPECT_EQ(run.outcomes[2].reason, FinishReason::kStop);
  EXPECT_EQ(run.outcomes[2].tokens, ExpectedTokens(next, prompts[2], 40, {kEos}));
  EXPECT_EQ(run.outcomes[2].tokens.size(), 5u);
  for (const StepPlan& plan : run.plans) {
    for (const SequencePlan& seq : plan.sequences) {
      // Drafts never reach past max_tokens: the last sample comes after them.
      const uint64_t limit = seq.sequence_id == 1 ? 3 : seq.sequence_id == 2 ? 11 : 40;
      EXPECT_LT(seq.sample_index + static_cast<uint64_t>(seq.draft_tokens), limit);
    }
  }
  EXPECT_GT(run.stats.replicas[0].accepted_draft_tokens, 0);
  EXPECT_EQ(run.stats.replicas[0].accepted_draft_tokens, run.stats.replicas[0].draft_tokens);
  EXPECT_TRUE(run.invariants.ok()) << run.invariants;
}

TEST(SchedulerSpeculativeTest, ATinyPoolKeepsOutputsExact) {
  // 12 blocks of 4 = 48 positions for four requests of up to 42 positions: preemptions, and
  // drafts that find no free block (they are dropped, never preempt).
  const NextTokenFn next = RepetitiveNext(5);
  const std::vector<std::vector<int32_t>> prompts = RepetitivePrompts(4, 10);
  const std::vector<int> max_tokens = {32, 32, 32, 32};
  const SpecRun run = RunAll(SpeculativeOptions(), {.kv_blocks = 12, .block_size = 4, .max_step_tokens = 32}, next,
                         prompts, max_tokens, 4);
  int preemptions = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(run.outcomes[i].finished);
    EXPECT_TRUE(run.outcomes[i].status.ok()) << run.outcomes[i].status;
    EXPECT_EQ(run.outcomes[i].tokens, ExpectedTokens(next, prompts[i], max_tokens[i])) << "request " << i;
    preemptions += run.outcomes[i].usage.preemptions;
  }
  EXPECT_GT(preemptions, 0);
  EXPECT_GT(run.stats.replicas[0].accepted_draft_tokens, 0);
  EXPECT_TRUE(run.invariants.ok()) << run.invariants;
  EXPECT_EQ(run.stats.replicas[0].blocks.used, 0);
}

TEST(SchedulerSpeculativeTest, DraftsStopWhereTheyFailAndComeBackWhereTheyHit) {
  // Three symbols at random for the first 60 generated tokens (every short tail recurs, its
  // continuation is right one time in three), then a period of 7 (every draft right).
  const size_t prompt_len = 12;
  const NextTokenFn next = [hash = HashNextToken(1000)](std::span<const int32_t> context) {
    if (context.size() < prompt_len + 60) return 3 + hash(context) % 3;
    return context[context.size() - 7];
  };
  const std::vector<std::vector<int32_t>> prompts = {MakePrompt(12, 900), MakePrompt(12, 901)};
  const std::vector<int> max_tokens = {120, 120};
  const FakeExecutorOptions replica{.kv_blocks = 256, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 8};
  SchedulerOptions adaptive = SpeculativeOptions();
  adaptive.speculative.min_keep_chance = 0.35f;
  const SpecRun always = RunAll(SpeculativeOptions(), replica, next, prompts, max_tokens, 2);
  const SpecRun run = RunAll(adaptive, replica, next, prompts, max_tokens, 2);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(run.outcomes[i].tokens, ExpectedTokens(next, prompts[i], max_tokens[i])) << i;
    EXPECT_EQ(always.outcomes[i].tokens, run.outcomes[i].tokens) << i;
  }
  int64_t random_phase = 0, always_random_phase = 0, repeating_phase = 0;
  for (const SpecRun* r : {&run, &always}) {
    for (const StepPlan& plan : r->plans) {
      for (const SequencePlan& seq : plan.sequences) {
        if (seq.sample_index > 0 && seq.sample_index < 60) {
          (r == &run ? random_phase : always_random_phase) += seq.draft_tokens;
        } else if (r == &run && seq.sample_index >= 70) {
          repeating_phase += seq.draft_tokens;
        }
      }
    }
  }
  EXPECT_GT(always_random_phase, 100);
  EXPECT_LT(random_phase * 4, always_random_phase) << "drafts that fail two times in three should mostly stop";
  EXPECT_GT(repeating_phase, 50) << "probes should bring the drafts back once the text repeats";
  const SpecRun plain = RunAll(TestOptions(), replica, next, prompts, max_tokens, 2);
  EXPECT_LT(run.plans.size() + 30, plain.plans.size()) << "the repeating half should still save steps";
  EXPECT_TRUE(run.invariants.ok()) << run.invariants;
}

TEST(SchedulerSpeculativeTest, DraftsNeverCrowdOutAnotherDecode) {
  // Four streams decoding under a 6-token budget: drafts get what is left after a token for
  // every decode, so each stream is in every step from its first to its last.
  const NextTokenFn next = RepetitiveNext(3);
  const std::vector<std::vector<int32_t>> prompts = RepetitivePrompts(4, 1);
  const std::vector<int> max_tokens = {30, 30, 30, 30};
  const SpecRun run = RunAll(SpeculativeOptions(), {.kv_blocks = 128, .block_size = 4, .max_step_tokens = 6}, next,
                             prompts, max_tokens, 4);
  std::map<uint64_t, std::vector<uint64_t>> steps_of;
  int64_t drafts = 0;
  for (const StepPlan& plan : run.plans) {
    for (const SequencePlan& seq : plan.sequences) {
      steps_of[seq.sequence_id].push_back(plan.step_id);
      drafts += seq.draft_tokens;
    }
  }
  ASSERT_EQ(steps_of.size(), 4u);
  for (const auto& [id, steps] : steps_of) {
    EXPECT_EQ(steps.back() - steps.front() + 1, steps.size()) << "sequence " << id << " skipped a step";
  }
  EXPECT_GT(drafts, 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(run.outcomes[i].tokens, ExpectedTokens(next, prompts[i], max_tokens[i])) << i;
  }
}

// Random configurations: budgets that cut drafts short, pools that preempt, end tokens inside
// drafts, requests joining and leaving, cancellations, two replicas. Every finished text must be
// the request's text alone, or a prefix of it for a cancelled one; the invariants must hold.
TEST(SchedulerSpeculativeTest, RandomConfigurationsKeepEveryTextExact) {
  constexpr int32_t kEos = 2;
  std::mt19937 rng(20261128);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int round = 0; round < 40; ++round) {
    const size_t period = static_cast<size_t>(uniform(2, 9));
    const int noise = uniform(2, 12);  // one token in `noise` from the hash
    const NextTokenFn next = [period, noise, hash = HashNextToken(1000)](std::span<const int32_t> context) {
      const int32_t h = hash(context);
      if (context.size() < period || h % noise == 0) return h % 97 == 0 ? kEos : h;
      return context[context.size() - period];
    };
    const int block_size = uniform(1, 3) * 2;
    const int largest = (30 + 40 + block_size - 1) / block_size;  // blocks of the largest request
    FakeExecutorOptions replica{.kv_blocks = uniform(largest, 3 * largest), .block_size = block_size,
                                .max_step_tokens = uniform(4, 40), .max_step_sequences = uniform(1, 8)};
    replica.max_logit_rows = uniform(replica.max_step_sequences, 12);
    FakeExecutor a(replica, next), b(replica, next);
    SchedulerOptions options = TestOptions(block_size);
    options.end_of_generation = {kEos};
    options.speculative = {.max_tokens = uniform(1, 8), .max_ngram = uniform(2, 4), .min_ngram = 1,
                           .max_batch = uniform(1, 8), .min_keep_chance = uniform(0, 1) == 0 ? 0.0f : 0.35f};
    auto scheduler = MakeScheduler(options, {&a, &b});
    ASSERT_NE(scheduler, nullptr);
    Collector collector;
    const int n = uniform(1, 10);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<int> max_tokens;
    std::vector<RequestId> ids;
    for (int i = 0; i < n; ++i) {
      prompts.push_back(MakePrompt(uniform(1, 30), static_cast<uint32_t>(1000 * round + i)));
      max_tokens.push_back(uniform(1, 40));
      GenerateRequest request = MakeRequest(collector, i, prompts.back(), max_tokens.back());
      request.ignore_eos = uniform(0, 3) == 0;
      auto id = scheduler->Submit(std::move(request));
      ASSERT_TRUE(id.ok()) << id.status();
      ids.push_back(*id);
      for (int it = uniform(0, 2); it > 0; --it) scheduler->RunIteration();
    }
    const int cancelled = uniform(0, 2) == 0 ? uniform(0, n - 1) : -1;
    for (int it = uniform(0, 4); it > 0; --it) scheduler->RunIteration();
    if (cancelled >= 0) scheduler->Cancel(ids[static_cast<size_t>(cancelled)], FinishReason::kCancelled).IgnoreError();
    RunUntilIdle(*scheduler);
    for (int i = 0; i < n; ++i) {
      const Outcome o = collector.Get(i);
      ASSERT_TRUE(o.finished) << "round " << round << " request " << i;
      EXPECT_EQ(o.events_after_finish, 0);
      const std::unordered_set<int32_t> eos =
          (o.reason == FinishReason::kLength && o.tokens.size() == static_cast<size_t>(max_tokens[i]))
              ? std::unordered_set<int32_t>{}
              : std::unordered_set<int32_t>{kEos};
      std::vector<int32_t> want = ExpectedTokens(next, prompts[i], max_tokens[i], eos);
      if (i == cancelled && o.reason == FinishReason::kCancelled) {
        ASSERT_LE(o.tokens.size(), want.size()) << "round " << round << " request " << i;
        want.resize(o.tokens.size());
      } else {
        EXPECT_TRUE(o.status.ok()) << "round " << round << " request " << i << ": " << o.status;
      }
      EXPECT_EQ(o.tokens, want) << "round " << round << " request " << i;
    }
    EXPECT_TRUE(scheduler->invariant_status().ok()) << "round " << round << ": " << scheduler->invariant_status();
    for (const ReplicaStats& r : scheduler->Stats().replicas) EXPECT_EQ(r.blocks.used, 0) << "round " << round;
  }
}

// Allows every token: a constrained request whose text is the unconstrained one. It cannot be
// copied (no Clone), so its requests get no drafts.
class AllowAll final : public OutputConstraint {
 public:
  const TokenMask& AllowedTokens() override { return mask_; }
  bool Complete() const override { return true; }
  bool Accept(int32_t) override { return true; }

 private:
  TokenMask mask_ = TokenMask(1000 / 64 + 1, ~uint64_t{0});
};

TEST(SchedulerSpeculativeTest, NoDraftsForLogprobsConstraintsOrLargeBatches) {
  const NextTokenFn next = RepetitiveNext(4);
  FakeExecutor executor({.kv_blocks = 256, .block_size = 4, .max_step_tokens = 64, .max_step_sequences = 8}, next);
  auto scheduler = MakeScheduler(SpeculativeOptions(4, /*max_batch=*/3), {&executor});
  ASSERT_NE(scheduler, nullptr);
  Collector collector;
  const std::vector<std::vector<int32_t>> prompts = RepetitivePrompts(5, 8);
  GenerateRequest logprobs = MakeRequest(collector, 0, prompts[0], 24);
  logprobs.sampling.logprobs = true;
  ASSERT_TRUE(scheduler->Submit(std::move(logprobs)).ok());
  GenerateRequest constrained = MakeRequest(collector, 1, prompts[1], 24);
  constrained.constraint = std::make_shared<AllowAll>();
  ASSERT_TRUE(scheduler->Submit(std::move(constrained)).ok());
  RunUntilIdle(*scheduler);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(collector.Get(i).tokens, ExpectedTokens(next, prompts[static_cast<size_t>(i)], 24)) << i;
  }
  EXPECT_EQ(scheduler->Stats().replicas[0].draft_tokens, 0);

  // Five decoding at once is over max_batch 3: no drafts until two have finished.
  const std::vector<int> lengths = {6, 9, 30, 30, 30};
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 10 + i, prompts[static_cast<size_t>(i)], lengths[i])).ok());
  }
  RunUntilIdle(*scheduler);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(collector.Get(10 + i).tokens, ExpectedTokens(next, prompts[static_cast<size_t>(i)], lengths[i])) << i;
  }
  bool drafted = false;
  for (const StepPlan& plan : executor.plans()) {
    int decodes = 0, drafts = 0;
    for (const SequencePlan& seq : plan.sequences) {
      decodes += seq.sample_index > 0 ? 1 : 0;
      drafts += seq.draft_tokens;
    }
    if (decodes > 3) {
      EXPECT_EQ(drafts, 0) << "step " << plan.step_id << " drafts with " << decodes << " decodes";
    }
    drafted |= drafts > 0;
  }
  EXPECT_TRUE(drafted) << "three decodes or fewer should draft";
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

// The k-th generated token must be k modulo 3 (a mask that changes at every position); copied
// by Clone, so drafts are walked through it.
class ResidueConstraint final : public OutputConstraint {
 public:
  const TokenMask& AllowedTokens() override {
    mask_.assign(1000 / 64 + 1, 0);
    for (int32_t t = accepted_ % 3; t < 1000; t += 3) mask_[t / 64] |= uint64_t{1} << (t % 64);
    return mask_;
  }
  bool Complete() const override { return true; }
  bool Accept(int32_t token) override {
    if (token % 3 != accepted_ % 3) return false;
    ++accepted_;
    return true;
  }
  std::unique_ptr<OutputConstraint> Clone() const override { return std::make_unique<ResidueConstraint>(*this); }

 private:
  int accepted_ = 0;
  TokenMask mask_;
};

// What the fake executor generates for `prompt` under ResidueConstraint: the first token from
// the model's choice on with the position's residue.
std::vector<int32_t> ResidueExpected(const NextTokenFn& next, std::vector<int32_t> context, int max_tokens) {
  std::vector<int32_t> out;
  for (int k = 0; k < max_tokens; ++k) {
    int32_t token = next(context);
    while (token % 3 != k % 3) token = (token + 1) % 1000;
    out.push_back(token);
    context.push_back(token);
  }
  return out;
}

TEST(SchedulerSpeculativeTest, ConstrainedDraftsCarryAMaskPerPosition) {
  // Period 6 keeps each position's residue (6 is a multiple of 3): the output repeats and its
  // drafts pass the constraint; the prompt's own tokens mostly do not.
  const NextTokenFn next = RepetitiveNext(6);
  FakeExecutor executor({.kv_blocks = 256, .block_size = 4, .max_step_tokens = 32, .max_step_sequences = 8}, next);
  auto scheduler = MakeScheduler(SpeculativeOptions(), {&executor});
  ASSERT_NE(scheduler, nullptr);
  Collector collector;
  const std::vector<std::vector<int32_t>> prompts = RepetitivePrompts(3, 9);
  for (int i = 0; i < 3; ++i) {
    GenerateRequest request = MakeRequest(collector, i, prompts[static_cast<size_t>(i)], 40);
    request.constraint = std::make_shared<ResidueConstraint>();
    ASSERT_TRUE(scheduler->Submit(std::move(request)).ok());
  }
  RunUntilIdle(*scheduler);
  for (int i = 0; i < 3; ++i) {
    const Outcome o = collector.Get(i);
    EXPECT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.tokens, ResidueExpected(next, prompts[static_cast<size_t>(i)], 40)) << i;
  }
  const ReplicaStats stats = scheduler->Stats().replicas[0];
  EXPECT_GT(stats.accepted_draft_tokens, 20) << stats.draft_tokens << " drafted";
  for (const StepPlan& plan : executor.plans()) {
    for (const SequencePlan& seq : plan.sequences) {
      if (!seq.sample) continue;
      EXPECT_EQ(seq.allowed_tokens.size(), (1000 / 64 + 1) * static_cast<size_t>(1 + seq.draft_tokens));
    }
  }
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();
}

TEST(SchedulerSpeculativeTest, AReplicasDraftLimitCapsItsDrafts) {
  // Workers that predate speculative decoding register no draft capacity (0): no drafts there;
  // one that takes 2 gets at most 2 whatever --speculative-tokens says.
  const NextTokenFn next = RepetitiveNext(4);
  const std::vector<std::vector<int32_t>> prompts = RepetitivePrompts(2, 8);
  const std::vector<int> max_tokens = {30, 30};
  for (int32_t limit : {0, 2}) {
    const SpecRun run = RunAll(SpeculativeOptions(8), {.kv_blocks = 128, .block_size = 4, .max_draft_tokens = limit},
                               next, prompts, max_tokens, 2);
    int32_t longest = 0;
    for (const StepPlan& plan : run.plans) {
      for (const SequencePlan& seq : plan.sequences) longest = std::max(longest, seq.draft_tokens);
    }
    EXPECT_EQ(longest, limit) << "replica limit " << limit;
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(run.outcomes[i].tokens, ExpectedTokens(next, prompts[i], max_tokens[i])) << i;
    }
  }
}

TEST(SchedulerSpeculativeTest, CreateRejectsBadDraftOptions) {
  FakeExecutor executor({});
  SchedulerOptions options = TestOptions();
  options.speculative.min_ngram = 4;  // above max_ngram 3
  auto scheduler = Scheduler::Create(options, {&executor});
  ASSERT_FALSE(scheduler.ok());
  EXPECT_EQ(scheduler.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(scheduler.status().message().find("n-gram"), std::string_view::npos) << scheduler.status();
}

}  // namespace
}  // namespace bitfleet::coordinator::testing

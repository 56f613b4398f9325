// The scheduler driving a real ModelRunner (synthesized tiny llama) through the in-process
// executor. Every request's tokens must equal what the request generates alone through a
// SequenceSession with the `bitfleet run` sampling loop (Sampler + Rng(seed)): batching,
// chunked prefill, prefix reuse and preemption may not change a single token.
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "cache/block_pool.h"
#include "coordinator/inprocess_executor.h"
#include "coordinator/output_constraint.h"
#include "coordinator/scheduler.h"
#include "gtest/gtest.h"
#include "sharding/fake_communicator.h"
#include "tests/unit/coordinator/scheduler_test_util.h"
#include "tests/unit/worker/runner_test_util.h"
#include "worker/sampler.h"
#include "worker/sequence_session.h"
#include "worker/step_executor.h"

namespace bitfleet::coordinator::testing {
namespace {

constexpr int kBlockSize = 8;
constexpr int32_t kVocab = 1024;  // tiny preset

StatusOr<std::unique_ptr<worker::ModelRunner>> TinyRunner(int kv_blocks,
                                                           sharding::Communicator* communicator = nullptr) {
  BF_ASSIGN_OR_RETURN(std::string path, worker::testing::SynthTinyModel("llama", DType::kF32));
  BF_ASSIGN_OR_RETURN(auto file, worker::testing::OpenModel(path));
  worker::RunnerOptions options;
  options.threads = 2;
  options.max_step_tokens = 64;
  options.max_step_sequences = 8;
  options.max_logit_rows = 8;
  options.max_context = 256;
  options.kv_block_size = kBlockSize;
  options.kv_blocks = kv_blocks;
  options.communicator = communicator;
  return worker::ModelRunner::Create(std::move(file), options);
}

// One replica of `tp` ranks in this process, as the worker processes of a TP group run it: every
// plan goes to every rank (one thread each; collectives meet in a FakeGroup), every rank samples
// through the distributed sampler, all ranks must answer the same tokens.
class TpGroupExecutor final : public Executor {
 public:
  static StatusOr<std::unique_ptr<TpGroupExecutor>> Create(int tp, int kv_blocks) {
    std::unique_ptr<TpGroupExecutor> group(new TpGroupExecutor(tp));
    std::vector<StatusOr<std::unique_ptr<worker::ModelRunner>>> runners(tp);  // UNKNOWN until run
    std::vector<std::thread> threads;
    for (int r = 0; r < tp; ++r) {
      threads.emplace_back([&, r] { runners[r] = TinyRunner(kv_blocks, group->group_.rank(r)); });
    }
    for (auto& thread : threads) thread.join();
    for (auto& runner : runners) {
      BF_RETURN_IF_ERROR(runner.status());
      if ((*runner)->logits_whole()) return absl::FailedPreconditionError("expected vocabulary-sliced logits");
      group->steps_.push_back(std::make_unique<worker::StepExecutor>(**runner));
      group->runners_.push_back(std::move(*runner));
    }
    return group;
  }

  StatusOr<StepResult> Execute(const StepPlan& plan) override {
    const size_t tp = steps_.size();
    std::vector<StatusOr<StepResult>> results(tp, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (size_t r = 0; r < tp; ++r) threads.emplace_back([&, r] { results[r] = steps_[r]->Execute(plan); });
    for (auto& thread : threads) thread.join();
    for (size_t r = 0; r < tp; ++r) {
      BF_RETURN_IF_ERROR(results[r].status());
      for (size_t i = 0; i < plan.sequences.size(); ++i) {
        if (results[r]->sequences[i].token != results[0]->sequences[i].token ||
            results[r]->sequences[i].draft_samples != results[0]->sequences[i].draft_samples) {
          return absl::InternalError("ranks sampled different tokens");
        }
      }
    }
    return std::move(results[0]);
  }
  int32_t kv_blocks() const override { return runners_[0]->kv_blocks(); }
  int32_t kv_block_size() const override { return runners_[0]->kv_block_size(); }
  int32_t max_step_tokens() const override { return runners_[0]->options().max_step_tokens; }
  int32_t max_step_sequences() const override { return runners_[0]->options().max_step_sequences; }
  int32_t max_draft_tokens() const override { return kMaxDraftTokens; }
  bool healthy() const override { return true; }

 private:
  explicit TpGroupExecutor(int tp) : group_(tp, std::chrono::seconds(60)) {}
  sharding::FakeGroup group_;
  std::vector<std::unique_ptr<worker::ModelRunner>> runners_;
  std::vector<std::unique_ptr<worker::StepExecutor>> steps_;
};

// What `bitfleet run` generates for the request: one sequence, one Rng(seed) stream.
std::vector<int32_t> RunAlone(worker::ModelRunner& runner, const std::vector<int32_t>& prompt, int max_tokens,
                              const StepSampling& sampling) {
  cache::BlockPool pool(runner.kv_blocks());
  worker::SequenceSession session(runner, pool);
  worker::Sampler sampler(runner.n_vocab());
  const worker::SamplingParams params = worker::ToSamplingParams(sampling);
  worker::Rng rng(params.seed);
  std::vector<int32_t> history = prompt;
  std::vector<int32_t> out;
  auto logits = session.Append(prompt);
  EXPECT_TRUE(logits.ok()) << logits.status();
  while (logits.ok()) {
    const int32_t token = sampler.Sample(*logits, history, params, rng);
    out.push_back(token);
    history.push_back(token);
    if (static_cast<int>(out.size()) == max_tokens) break;
    logits = session.Append(std::span<const int32_t>(&token, 1));
    EXPECT_TRUE(logits.ok()) << logits.status();
  }
  return out;
}

SchedulerOptions ModelOptions() {
  SchedulerOptions options;
  options.model_id = "synth-tiny-llama-f32";
  options.n_vocab = kVocab;
  options.max_context = 256;
  options.kv_block_size = kBlockSize;
  options.check_invariants = true;
  return options;
}

struct Case {
  std::vector<int32_t> prompt;
  int max_tokens;
  StepSampling sampling;
};

class SchedulerModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reference = TinyRunner(64);
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::move(*reference);
  }

  std::unique_ptr<InProcessExecutor> MakeExecutor(int kv_blocks) {
    auto runner = TinyRunner(kv_blocks);
    EXPECT_TRUE(runner.ok()) << runner.status();
    return runner.ok() ? std::make_unique<InProcessExecutor>(std::move(*runner)) : nullptr;
  }

  // Submits cases[first..last) under keys first..last-1.
  void SubmitAll(Scheduler& scheduler, const std::vector<Case>& cases, size_t first, size_t last) {
    for (size_t i = first; i < last; ++i) {
      GenerateRequest request = MakeRequest(collector_, static_cast<int>(i), cases[i].prompt, cases[i].max_tokens);
      request.sampling = cases[i].sampling;
      ASSERT_TRUE(scheduler.Submit(std::move(request)).ok());
    }
  }

  void ExpectAloneOutputs(const std::vector<Case>& cases) {
    for (size_t i = 0; i < cases.size(); ++i) {
      const Outcome o = collector_.Get(static_cast<int>(i));
      ASSERT_TRUE(o.finished) << i;
      EXPECT_TRUE(o.status.ok()) << o.status;
      EXPECT_EQ(o.tokens, RunAlone(*reference_, cases[i].prompt, cases[i].max_tokens, cases[i].sampling))
          << "request " << i;
    }
  }

  std::unique_ptr<worker::ModelRunner> reference_;
  Collector collector_;
};

StepSampling Greedy() { return StepSampling{}; }

StepSampling Seeded(uint64_t seed) {
  StepSampling s;
  s.temperature = 0.9f;
  s.top_k = 40;
  s.top_p = 0.95f;
  s.min_p = 0.05f;
  s.seed = seed;
  return s;
}

TEST_F(SchedulerModelTest, GreedyBatchedGenerationEqualsEachRequestAlone) {
  auto executor = MakeExecutor(128);
  ASSERT_NE(executor, nullptr);
  auto scheduler = Scheduler::Create(ModelOptions(), {executor.get()});
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  std::vector<Case> cases;
  const std::vector<int> lens = {3, 17, 40, 9, 70, 25};
  const std::vector<int> gens = {12, 8, 10, 16, 6, 9};
  for (size_t i = 0; i < lens.size(); ++i) cases.push_back({MakePrompt(lens[i], 300 + i, kVocab), gens[i], Greedy()});
  SubmitAll(**scheduler, cases, 0, 3);
  for (int it = 0; it < 2; ++it) (*scheduler)->RunIteration();
  SubmitAll(**scheduler, cases, 3, cases.size());  // join the running batch
  RunUntilIdle(**scheduler);
  ExpectAloneOutputs(cases);
  EXPECT_TRUE((*scheduler)->invariant_status().ok()) << (*scheduler)->invariant_status();
}

TEST_F(SchedulerModelTest, SeededSamplingReproducesTheSingleStreamRun) {
  auto executor = MakeExecutor(128);
  ASSERT_NE(executor, nullptr);
  auto scheduler = Scheduler::Create(ModelOptions(), {executor.get()});
  ASSERT_TRUE(scheduler.ok());
  std::vector<Case> cases = {{MakePrompt(11, 400, kVocab), 14, Seeded(7)},
                             {MakePrompt(30, 401, kVocab), 10, Seeded(8)},
                             {MakePrompt(11, 400, kVocab), 14, Seeded(9)},  // same prompt, other seed
                             {MakePrompt(5, 402, kVocab), 12, Greedy()}};
  SubmitAll(**scheduler, cases, 0, cases.size());
  RunUntilIdle(**scheduler);
  ExpectAloneOutputs(cases);
  EXPECT_NE(collector_.Get(0).tokens, collector_.Get(2).tokens);
}

TEST_F(SchedulerModelTest, PenaltyHistoryReachesTheSampler) {
  auto executor = MakeExecutor(128);
  ASSERT_NE(executor, nullptr);
  auto scheduler = Scheduler::Create(ModelOptions(), {executor.get()});
  ASSERT_TRUE(scheduler.ok());
  StepSampling windowed;
  windowed.repeat_penalty = 1.5f;
  windowed.presence_penalty = 0.5f;
  windowed.frequency_penalty = 0.3f;
  windowed.penalty_last_n = 8;
  StepSampling all = windowed;
  all.penalty_last_n = -1;
  StepSampling sampled = Seeded(11);
  sampled.repeat_penalty = 1.3f;
  sampled.penalty_last_n = 16;
  std::vector<int32_t> repetitive;
  for (int i = 0; i < 24; ++i) repetitive.push_back(10 + i % 3);
  std::vector<Case> cases = {{repetitive, 20, windowed}, {repetitive, 20, all}, {MakePrompt(70, 403, kVocab), 12, sampled}};
  SubmitAll(**scheduler, cases, 0, cases.size());
  RunUntilIdle(**scheduler);
  ExpectAloneOutputs(cases);
  EXPECT_NE(collector_.Get(0).tokens, RunAlone(*reference_, repetitive, 20, Greedy()))
      << "the penalties should change this text";
}

TEST_F(SchedulerModelTest, PrefixReuseSkipsRecomputeWithIdenticalOutput) {
  auto executor = MakeExecutor(128);
  ASSERT_NE(executor, nullptr);
  auto scheduler = Scheduler::Create(ModelOptions(), {executor.get()});
  ASSERT_TRUE(scheduler.ok());
  const std::vector<Case> cases = {{MakePrompt(44, 404, kVocab), 8, Greedy()}, {MakePrompt(44, 404, kVocab), 8, Greedy()}};
  SubmitAll(**scheduler, cases, 0, 1);
  RunUntilIdle(**scheduler);
  const int64_t cold_tokens = executor->tokens_executed();
  EXPECT_EQ(cold_tokens, 44 + 7);
  SubmitAll(**scheduler, cases, 1, 2);
  RunUntilIdle(**scheduler);
  // 44 tokens = 5 full blocks of 8 + 4: the 5 blocks are reused, only 4 prompt tokens computed.
  EXPECT_EQ(collector_.Get(1).usage.cached_prompt_tokens, 40);
  EXPECT_EQ(executor->tokens_executed() - cold_tokens, 4 + 7);
  ExpectAloneOutputs(cases);
}

TEST_F(SchedulerModelTest, PreemptionUnderATinyPoolKeepsOutputsExact) {
  // 14 blocks of 8 = 112 positions; four requests of 49 positions (7 blocks) each.
  auto executor = MakeExecutor(14);
  ASSERT_NE(executor, nullptr);
  auto scheduler = Scheduler::Create(ModelOptions(), {executor.get()});
  ASSERT_TRUE(scheduler.ok());
  std::vector<Case> cases;
  for (int i = 0; i < 4; ++i) {
    cases.push_back({MakePrompt(30, 500 + i, kVocab), 20, i == 3 ? Seeded(21) : Greedy()});
  }
  SubmitAll(**scheduler, cases, 0, cases.size());
  RunUntilIdle(**scheduler);
  ExpectAloneOutputs(cases);
  int preemptions = 0;
  for (int i = 0; i < 4; ++i) preemptions += collector_.Get(i).usage.preemptions;
  EXPECT_GT(preemptions, 0);
  EXPECT_TRUE((*scheduler)->invariant_status().ok()) << (*scheduler)->invariant_status();
  EXPECT_EQ((*scheduler)->Stats().replicas[0].blocks.used, 0);
}

TEST_F(SchedulerModelTest, TensorParallelReplicaGeneratesWhatOneRankDoes) {
  auto executor = TpGroupExecutor::Create(2, 64);
  ASSERT_TRUE(executor.ok()) << executor.status();
  auto scheduler = Scheduler::Create(ModelOptions(), {executor->get()});
  ASSERT_TRUE(scheduler.ok());
  StepSampling penalized = Seeded(31);
  penalized.repeat_penalty = 1.2f;
  penalized.penalty_last_n = 16;
  const std::vector<Case> cases = {{MakePrompt(13, 600, kVocab), 10, Greedy()},
                                   {MakePrompt(29, 601, kVocab), 8, Seeded(30)},
                                   {MakePrompt(7, 602, kVocab), 9, penalized}};
  SubmitAll(**scheduler, cases, 0, cases.size());
  RunUntilIdle(**scheduler);
  ExpectAloneOutputs(cases);  // the references run at TP=1
}

// Speculative decoding (--speculative-tokens): whatever the drafts, every token is the one the
// request samples alone (greedy, seeded, penalized), at TP 1 and 2.
SchedulerOptions SpeculativeOptions() {
  SchedulerOptions options = ModelOptions();
  options.speculative = {.max_tokens = 4, .max_ngram = 3, .min_ngram = 1, .max_batch = 8, .min_keep_chance = 0.0f};
  return options;
}

std::vector<Case> SpeculativeCases() {
  StepSampling penalized = Seeded(41);
  penalized.repeat_penalty = 1.2f;
  penalized.presence_penalty = 0.4f;
  penalized.frequency_penalty = 0.3f;  // counts: a draft in a row's history before its time changes them
  penalized.penalty_last_n = 12;
  StepSampling greedy_penalized;
  greedy_penalized.frequency_penalty = 1.0f;
  greedy_penalized.penalty_last_n = -1;
  std::vector<int32_t> repetitive;
  for (int i = 0; i < 30; ++i) repetitive.push_back(40 + i % 5);
  StepSampling hot = Seeded(42);
  hot.temperature = 0.3f;
  return {{MakePrompt(13, 700, kVocab), 40, Greedy()},
          {repetitive, 40, Greedy()},
          {repetitive, 30, hot},
          {MakePrompt(21, 701, kVocab), 30, Seeded(43)},
          {repetitive, 24, penalized},
          {repetitive, 30, greedy_penalized}};
}

TEST_F(SchedulerModelTest, SpeculativeDecodingKeepsEveryTokenExact) {
  auto executor = MakeExecutor(128);
  ASSERT_NE(executor, nullptr);
  auto scheduler = Scheduler::Create(SpeculativeOptions(), {executor.get()});
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  const std::vector<Case> cases = SpeculativeCases();
  SubmitAll(**scheduler, cases, 0, cases.size());
  RunUntilIdle(**scheduler);
  ExpectAloneOutputs(cases);
  const ReplicaStats stats = (*scheduler)->Stats().replicas[0];
  EXPECT_GT(stats.accepted_draft_tokens, 0) << stats.draft_tokens << " drafts fed";
  EXPECT_TRUE((*scheduler)->invariant_status().ok()) << (*scheduler)->invariant_status();
}

TEST_F(SchedulerModelTest, SpeculativeDecodingAtTensorParallelTwo) {
  auto executor = TpGroupExecutor::Create(2, 128);
  ASSERT_TRUE(executor.ok()) << executor.status();
  auto scheduler = Scheduler::Create(SpeculativeOptions(), {executor->get()});
  ASSERT_TRUE(scheduler.ok());
  const std::vector<Case> cases = SpeculativeCases();
  SubmitAll(**scheduler, cases, 0, cases.size());
  RunUntilIdle(**scheduler);
  ExpectAloneOutputs(cases);
  EXPECT_GT((*scheduler)->Stats().replicas[0].accepted_draft_tokens, 0);
}

// The worker's side, draft by draft: a drafting step's samples equal those of steps that feed
// the same tokens without drafts (sample_index, penalty history and RNG draw each), whatever the
// model would have generated.
TEST_F(SchedulerModelTest, DraftSamplesEqualStepsFedWithoutDrafts) {
  StepSampling penalized;
  penalized.repeat_penalty = 1.3f;
  penalized.presence_penalty = 0.5f;
  penalized.frequency_penalty = 2.0f;
  penalized.penalty_last_n = 8;
  StepSampling sampled = Seeded(51);
  sampled.frequency_penalty = 1.5f;
  sampled.penalty_last_n = -1;
  const std::vector<int32_t> prompt = MakePrompt(10, 710, kVocab);
  // Drafts the model likes (its greedy text, then that text's first token again): each one
  // counted in a row's penalties before its time would change that row's sample.
  std::vector<int32_t> draft = RunAlone(*reference_, prompt, 4, Greedy());
  draft.push_back(draft[0]);
  const uint64_t first_index = 5;
  // Constrained decoding's masks, one per sample row: random halves of the vocabulary.
  std::mt19937_64 mask_rng(53);
  std::vector<std::vector<uint64_t>> masks(draft.size() + 1, std::vector<uint64_t>(kVocab / 64));
  for (auto& mask : masks) {
    for (uint64_t& word : mask) word = mask_rng();
  }
  struct Variant {
    StepSampling sampling;
    bool masked;
  };
  for (const auto& [sampling, masked] : {Variant{Greedy(), false}, Variant{penalized, false}, Variant{sampled, false},
                                         Variant{Seeded(52), false}, Variant{Greedy(), true}, Variant{sampled, true}}) {
    auto runner = TinyRunner(32);
    ASSERT_TRUE(runner.ok()) << runner.status();
    worker::StepExecutor step(**runner);
    auto run = [&](uint64_t id, std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> history,
                   int32_t drafts, uint64_t sample_index, bool sample, std::vector<uint64_t> allowed = {}) {
      SequencePlan seq;
      seq.sequence_id = id;
      seq.tokens = std::move(tokens);
      seq.start_pos = start;
      seq.block_table = {static_cast<int32_t>(2 * id), static_cast<int32_t>(2 * id + 1)};
      seq.sample = sample;
      seq.sampling = sampling;
      seq.history = std::move(history);
      seq.sample_index = sample_index;
      seq.draft_tokens = drafts;
      seq.allowed_tokens = std::move(allowed);
      StepPlan plan;
      plan.step_id = id;
      plan.sequences.push_back(std::move(seq));
      auto result = step.Execute(plan);
      EXPECT_TRUE(result.ok()) << result.status();
      return result.ok() ? result->sequences[0] : SequenceResult{};
    };
    // Sequence 0: the prompt but its last token, then that token and the drafts in one step.
    run(0, std::vector<int32_t>(prompt.begin(), prompt.end() - 1), 0, {}, 0, 0, false);
    std::vector<int32_t> tokens = {prompt.back()};
    tokens.insert(tokens.end(), draft.begin(), draft.end());
    std::vector<uint64_t> all_masks;
    for (const auto& mask : masks) all_masks.insert(all_masks.end(), mask.begin(), mask.end());
    const SequenceResult drafting = run(0, tokens, 9, std::vector<int32_t>(prompt.begin(), prompt.end() - 1), 5,
                                        first_index, true, masked ? all_masks : std::vector<uint64_t>{});
    ASSERT_EQ(drafting.draft_samples.size(), draft.size());
    // Sequence 1 + j: the prompt and drafts [0, j) fed whole, one sample.
    for (size_t j = 0; j <= draft.size(); ++j) {
      std::vector<int32_t> context = prompt;
      context.insert(context.end(), draft.begin(), draft.begin() + static_cast<std::ptrdiff_t>(j));
      const int32_t alone =
          run(1 + j, context, 0, {}, 0, first_index + j, true, masked ? masks[j] : std::vector<uint64_t>{}).token;
      EXPECT_EQ(j == 0 ? drafting.token : drafting.draft_samples[j - 1], alone)
          << "sample after draft " << j << ", temperature " << sampling.temperature << (masked ? ", masked" : "");
      if (masked) {
        EXPECT_TRUE(MaskHas(masks[j], alone)) << "sample after draft " << j;
      }
    }
  }
}

TEST_F(SchedulerModelTest, StepExecutorRejectsABadPlanWithoutRunning) {
  auto runner = TinyRunner(16);
  ASSERT_TRUE(runner.ok());
  worker::StepExecutor step(**runner);
  StepPlan plan;
  SequencePlan seq;
  seq.sequence_id = 1;
  seq.tokens = {5, 6, 7};
  seq.block_table = {0};
  seq.sampling.top_p = 0.0f;  // invalid
  plan.sequences.push_back(seq);
  EXPECT_EQ(step.Execute(plan).status().code(), absl::StatusCode::kInvalidArgument);
  plan.sequences[0].sampling.top_p = 1.0f;
  plan.sequences[0].block_table = {};  // too short
  EXPECT_EQ(step.Execute(plan).status().code(), absl::StatusCode::kInvalidArgument);
  plan.sequences[0].block_table = {0};
  plan.sequences[0].sample_index = 100000;  // beyond the context
  EXPECT_EQ(step.Execute(plan).status().code(), absl::StatusCode::kInvalidArgument);
  plan.sequences[0].sample_index = 0;
  plan.sequences[0].score_tokens = {6, 7, 8, 9};  // more than the chunk's tokens
  EXPECT_EQ(step.Execute(plan).status().code(), absl::StatusCode::kInvalidArgument);
  plan.sequences[0].score_tokens = {6, -1};  // outside the vocabulary
  EXPECT_EQ(step.Execute(plan).status().code(), absl::StatusCode::kInvalidArgument);
  plan.sequences[0].score_tokens = {};
  plan.sequences[0].draft_tokens = 3;  // all of the chunk: no real token to sample after
  EXPECT_EQ(step.Execute(plan).status().code(), absl::StatusCode::kInvalidArgument);
  plan.sequences[0].draft_tokens = 1;
  plan.sequences[0].sampling.logprobs = true;  // drafts are not reported with log probabilities
  EXPECT_EQ(step.Execute(plan).status().code(), absl::StatusCode::kInvalidArgument);
  plan.sequences[0].sampling.logprobs = false;
  plan.sequences[0].draft_tokens = 0;
  auto result = step.Execute(plan);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->sequences.size(), 1u);
  EXPECT_EQ(result->sequences[0].sequence_id, 1u);
  EXPECT_GE(result->sequences[0].token, 0);
  EXPECT_EQ(step.steps_executed(), 1);
}

}  // namespace
}  // namespace bitfleet::coordinator::testing

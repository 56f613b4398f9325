// Constrained decoding in the scheduler (GenerateRequest::constraint): every sampling plan
// carries the constraint's mask, every sampled token goes back to it, and the request ends when
// nothing may follow (stop when complete, an error otherwise) without harming its neighbours.
#include <memory>
#include <vector>

#include "coordinator/output_constraint.h"
#include "coordinator/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/scheduler_test_util.h"

namespace bitfleet::coordinator::testing {
namespace {

constexpr int32_t kVocab = 1000;
constexpr int32_t kEnd = 2;

// Allows multiples of 3 for `length` tokens, then the end token (or nothing, when `stuck`).
class EveryThirdToken final : public OutputConstraint {
 public:
  EveryThirdToken(int length, bool stuck) : length_(length), stuck_(stuck) {}

  const TokenMask& AllowedTokens() override {
    mask_.assign((kVocab + 63) / 64, 0);
    if (static_cast<int>(accepted.size()) < length_) {
      for (int32_t t = 3; t < kVocab; t += 3) mask_[t / 64] |= uint64_t{1} << (t % 64);
    } else if (!stuck_) {
      mask_[kEnd / 64] |= uint64_t{1} << (kEnd % 64);
    }
    return mask_;
  }
  bool Accept(int32_t token) override {
    if (!MaskHas(AllowedTokens(), token)) return false;
    accepted.push_back(token);
    return true;
  }
  bool Complete() const override { return static_cast<int>(accepted.size()) >= length_ && !stuck_; }

  std::vector<int32_t> accepted;

 private:
  const int length_;
  const bool stuck_;
  TokenMask mask_;
};

SchedulerOptions Options() {
  SchedulerOptions options = TestOptions();
  options.end_of_generation = {kEnd};
  return options;
}

TEST(SchedulerConstraintTest, SamplesFollowTheMaskUntilTheOutputIsWhole) {
  FakeExecutor executor({.kv_blocks = 64, .block_size = 4, .max_step_tokens = 8, .max_step_sequences = 4});
  auto scheduler = MakeScheduler(Options(), {&executor});
  Collector collector;
  auto constraint = std::make_shared<EveryThirdToken>(5, /*stuck=*/false);
  GenerateRequest request = MakeRequest(collector, 0, MakePrompt(14, 3), 50);
  request.constraint = constraint;
  ASSERT_TRUE(scheduler->Submit(std::move(request)).ok());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(6, 4), 12)).ok());
  RunUntilIdle(*scheduler);

  const Outcome out = collector.Get(0);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.reason, FinishReason::kStop);
  ASSERT_EQ(out.tokens.size(), 5u);
  for (int32_t t : out.tokens) EXPECT_EQ(t % 3, 0) << t;
  std::vector<int32_t> accepted = out.tokens;
  accepted.push_back(kEnd);
  EXPECT_EQ(constraint->accepted, accepted) << "every sampled token, the end included";
  // Masks only where the plan samples, and only for the constrained request.
  int masked = 0;
  for (const StepPlan& plan : executor.plans()) {
    for (const SequencePlan& seq : plan.sequences) {
      if (!seq.allowed_tokens.empty()) {
        EXPECT_TRUE(seq.sample);
        ++masked;
      }
    }
  }
  EXPECT_EQ(masked, 6) << "five tokens and the end";
  EXPECT_EQ(collector.Get(1).tokens, ExpectedTokens(HashNextToken(kVocab), MakePrompt(6, 4), 12, {kEnd}));
}

TEST(SchedulerConstraintTest, AnOutputThatCannotContinueEndsAloneWithAnError) {
  FakeExecutor executor({.kv_blocks = 64, .block_size = 4, .max_step_tokens = 8, .max_step_sequences = 4});
  auto scheduler = MakeScheduler(Options(), {&executor});
  Collector collector;
  GenerateRequest request = MakeRequest(collector, 0, MakePrompt(5, 3), 50);
  request.constraint = std::make_shared<EveryThirdToken>(3, /*stuck=*/true);
  ASSERT_TRUE(scheduler->Submit(std::move(request)).ok());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(collector, 1, MakePrompt(6, 4), 12)).ok());
  RunUntilIdle(*scheduler);
  const Outcome out = collector.Get(0);
  EXPECT_EQ(out.reason, FinishReason::kError);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kFailedPrecondition) << out.status;
  EXPECT_EQ(out.tokens.size(), 3u);
  EXPECT_TRUE(collector.Get(1).status.ok());
  EXPECT_EQ(collector.Get(1).tokens, ExpectedTokens(HashNextToken(kVocab), MakePrompt(6, 4), 12, {kEnd}));
  EXPECT_TRUE(scheduler->invariant_status().ok()) << scheduler->invariant_status();

  GenerateRequest with_ignore_eos = MakeRequest(collector, 2, MakePrompt(5, 3), 5);
  with_ignore_eos.constraint = std::make_shared<EveryThirdToken>(3, false);
  with_ignore_eos.ignore_eos = true;
  EXPECT_EQ(scheduler->Submit(std::move(with_ignore_eos)).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::coordinator::testing

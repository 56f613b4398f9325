// Request validation, and the coordinator's sampling ranges kept in step with the workers'
// (worker::ValidateSamplingParams): a value one accepts and the other rejects would let one
// request fail a whole batch.
#include "coordinator/request_validation.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "worker/sampler.h"
#include "worker/step_executor.h"

namespace bitfleet::coordinator {
namespace {

TEST(RequestValidationTest, SamplingRangesMatchTheWorkers) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> floats = {-inf, -100.5f, -2.5f, -2.0f, -1.0f, -1e-7f, 0.0f, 1e-7f, 0.5f, 1.0f,
                                     1.0001f, 2.0f, 2.01f, 9.99f, 10.0f, 10.5f, 99.0f, 100.0f, 101.0f, inf, nan};
  const std::vector<int32_t> ints = {-5, -2, -1, 0, 1, 40, 1 << 30};
  int checked = 0;
  for (int field = 0; field < 8; ++field) {
    const size_t n = field == 1 || field == 7 ? ints.size() : floats.size();
    for (size_t i = 0; i < n; ++i) {
      StepSampling s;
      s.temperature = 0.7f;
      switch (field) {
        case 0: s.temperature = floats[i]; break;
        case 1: s.top_k = ints[i]; break;
        case 2: s.top_p = floats[i]; break;
        case 3: s.min_p = floats[i]; break;
        case 4: s.repeat_penalty = floats[i]; break;
        case 5: s.presence_penalty = floats[i]; break;
        case 6: s.frequency_penalty = floats[i]; break;
        case 7: s.penalty_last_n = ints[i]; break;
      }
      EXPECT_EQ(ValidateStepSampling(s).ok(), worker::ValidateSamplingParams(worker::ToSamplingParams(s)).ok())
          << "field " << field << " value index " << i;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);

  const std::vector<std::vector<TokenBias>> biases = {
      {}, {{0, -100.0f}}, {{5, 100.0f}, {6, 0.0f}}, {{5, 100.01f}}, {{5, -inf}}, {{5, nan}}, {{-1, 1.0f}},
      {{4, 1.0f}, {4, 2.0f}}, {{4, 1.0f}, {3, 2.0f}}, std::vector<TokenBias>(kMaxLogitBias + 1)};
  for (size_t i = 0; i < biases.size(); ++i) {
    StepSampling s;
    s.logit_bias = biases[i];
    EXPECT_EQ(ValidateStepSampling(s).ok(), worker::ValidateSamplingParams(worker::ToSamplingParams(s)).ok())
        << "logit_bias case " << i;
  }
}

TEST(RequestValidationTest, RejectsMalformedRequests) {
  const RequestLimits limits{.n_vocab = 100, .max_context = 64};
  auto request = [](std::vector<int32_t> prompt, int max_tokens) {
    GenerateRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sink = [](const RequestEvent&) {};
    return r;
  };
  EXPECT_TRUE(ValidateRequest(request({1, 2, 3}, 61), limits).ok());
  EXPECT_EQ(ValidateRequest(request({1, 2, 3}, 62), limits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRequest(request({}, 1), limits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRequest(request({100}, 1), limits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRequest(request({-1}, 1), limits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRequest(request({1}, 0), limits).code(), absl::StatusCode::kInvalidArgument);
  GenerateRequest no_sink = request({1}, 1);
  no_sink.sink = nullptr;
  EXPECT_EQ(ValidateRequest(no_sink, limits).code(), absl::StatusCode::kInvalidArgument);
  GenerateRequest hot = request({1}, 1);
  hot.sampling.temperature = 101.0f;
  const Status status = ValidateRequest(hot, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(status.message()).find("temperature"), std::string::npos);
}

TEST(RequestValidationTest, PenaltiesActiveOnlyWithAWindow) {
  StepSampling s;
  EXPECT_FALSE(PenaltiesActive(s));
  s.repeat_penalty = 1.1f;
  EXPECT_TRUE(PenaltiesActive(s));
  s.penalty_last_n = 0;
  EXPECT_FALSE(PenaltiesActive(s));
  s.penalty_last_n = -1;
  EXPECT_TRUE(PenaltiesActive(s));
}

}  // namespace
}  // namespace bitfleet::coordinator

#include "coordinator/request_validation.h"

#include <cmath>

namespace bitfleet::coordinator {
namespace {

bool InRange(float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadline:
      return "deadline";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

Status ValidateStepSampling(const StepSampling& s, int32_t n_vocab) {
  if (!InRange(s.temperature, 0.0f, 100.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be in [0, 100], got ", s.temperature));
  }
  if (s.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", s.top_k));
  if (!InRange(s.top_p, 0.0f, 1.0f) || s.top_p == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", s.top_p));
  }
  if (!InRange(s.min_p, 0.0f, 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", s.min_p));
  }
  if (!InRange(s.repeat_penalty, 0.0f, 10.0f) || s.repeat_penalty == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("repeat_penalty must be in (0, 10], got ", s.repeat_penalty));
  }
  if (!InRange(s.presence_penalty, -2.0f, 2.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("presence_penalty must be in [-2, 2], got ", s.presence_penalty));
  }
  if (!InRange(s.frequency_penalty, -2.0f, 2.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("frequency_penalty must be in [-2, 2], got ", s.frequency_penalty));
  }
  if (s.penalty_last_n < -1) {
    return absl::InvalidArgumentError(absl::StrCat("penalty_last_n must be >= -1, got ", s.penalty_last_n));
  }
  if (s.top_logprobs < 0 || s.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ", s.top_logprobs));
  }
  if (s.logit_bias.size() > static_cast<size_t>(kMaxLogitBias)) {
    return absl::InvalidArgumentError(
        absl::StrCat("logit_bias has ", s.logit_bias.size(), " entries; at most ", kMaxLogitBias));
  }
  for (size_t i = 0; i < s.logit_bias.size(); ++i) {
    const TokenBias& b = s.logit_bias[i];
    if (b.token < 0 || b.token >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias token ", b.token, " is outside the vocabulary"));
    }
    if (i > 0 && b.token <= s.logit_bias[i - 1].token) {
      return absl::InvalidArgumentError("logit_bias tokens must be distinct and in ascending order");
    }
    if (!InRange(b.bias, -kMaxLogitBiasValue, kMaxLogitBiasValue)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias of token ", b.token, " must be in [-100, 100], got ", b.bias));
    }
  }
  return absl::OkStatus();
}

Status ValidateRequest(const GenerateRequest& request, const RequestLimits& limits) {
  if (request.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    const int32_t token = request.prompt[i];
    if (token < 0 || token >= limits.n_vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", i, " is ", token, ", outside the vocabulary of ", limits.n_vocab));
    }
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 1, got ", request.max_tokens));
  }
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  if (total > limits.max_context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", request.prompt.size(), " tokens) + max_tokens (",
                                                   request.max_tokens, ") exceeds the context of ",
                                                   limits.max_context, " tokens"));
  }
  BF_RETURN_IF_ERROR(ValidateStepSampling(request.sampling, limits.n_vocab));
  if (request.sampling.top_logprobs > 0 && !request.sampling.logprobs && !request.prompt_logprobs) {
    return absl::InvalidArgumentError("top_logprobs needs logprobs or prompt_logprobs");
  }
  if (request.constraint != nullptr && request.ignore_eos) {
    return absl::InvalidArgumentError("a response format needs the end-of-generation token: not with ignore_eos");
  }
  if (!request.sink) return absl::InvalidArgumentError("request without a sink");
  return absl::OkStatus();
}

bool PenaltiesActive(const StepSampling& s) {
  const bool any = s.repeat_penalty != 1.0f || s.presence_penalty != 0.0f || s.frequency_penalty != 0.0f;
  return any && s.penalty_last_n != 0;
}

}  // namespace bitfleet::coordinator

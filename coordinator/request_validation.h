// Validation of a request before anything is scheduled (DESIGN.md §9: requests are hostile
// input; one bad request never harms others). Everything a worker would reject is caught here,
// so a plan never fails because of one request's values.
#pragma once

#include <climits>
#include <cstdint>

#include "coordinator/request.h"
#include "core/status.h"

namespace bitfleet::coordinator {

struct RequestLimits {
  int32_t n_vocab = 0;      // token ids must lie in [0, n_vocab)
  int32_t max_context = 0;  // prompt + max_tokens must not exceed it
};

// INVALID_ARGUMENT naming the first bad field: non-finite values, temperature outside
// [0, 100], top_k < 0, top_p outside (0, 1], min_p outside [0, 1], repeat_penalty outside
// (0, 10], presence/frequency penalties outside [-2, 2], penalty_last_n < -1, logit_bias with
// more than kMaxLogitBias entries, a value outside [-100, 100], a token outside [0, n_vocab) or
// tokens not distinct and ascending. The ranges are the workers' (worker::ValidateSamplingParams);
// a unit test keeps the two in step.
Status ValidateStepSampling(const StepSampling& sampling, int32_t n_vocab = INT32_MAX);

// INVALID_ARGUMENT for an empty prompt, a token id outside the vocabulary, max_tokens < 1,
// prompt + max_tokens beyond the context, bad sampling values, top_logprobs without logprobs or
// prompt_logprobs, or a missing sink.
Status ValidateRequest(const GenerateRequest& request, const RequestLimits& limits);

// True when the sampler needs the penalty history (a penalty is active and its window is not 0).
bool PenaltiesActive(const StepSampling& sampling);

}  // namespace bitfleet::coordinator

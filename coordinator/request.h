// A generation request as the service layer hands it to the Scheduler, and the events the
// scheduler streams back (DESIGN.md §3). Token ids only: tokenizing, detokenizing and stop
// strings belong to the service layer.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "coordinator/executor.h"
#include "coordinator/output_constraint.h"
#include "core/status.h"

namespace bitfleet::coordinator {

using Clock = std::chrono::steady_clock;
using RequestId = uint64_t;

enum class FinishReason {
  kNone,       // not finished (token events)
  kLength,     // max_tokens generated
  kStop,       // an end-of-generation token (not streamed), or the service's Cancel(id, kStop)
  kCancelled,  // Cancel(id) by the client, or the scheduler stopped/drained
  kDeadline,   // the request's deadline passed
  kError,      // the replica failed or the plan was rejected (status says which)
};

// "length", "stop", "cancelled", "deadline", "error", "" for kNone (the OpenAI-style names).
const char* FinishReasonName(FinishReason reason);

struct RequestUsage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  // Prompt tokens found in the prefix cache on first admission (not recomputed).
  int32_t cached_prompt_tokens = 0;
  // Tokens this request fed through the model for prefill (prompt and, after a preemption, its
  // recomputed tokens); decode steps are not counted.
  int32_t prefilled_tokens = 0;
  int32_t preemptions = 0;
};

// One event of a request's stream. A request gets zero or more kPromptLogprobs events (only
// when it asks for them), zero or more kToken events, then exactly one kFinished event, and
// nothing after it.
struct RequestEvent {
  enum class Kind { kPromptLogprobs, kToken, kFinished };
  Kind kind = Kind::kToken;
  RequestId id = 0;
  int32_t token = -1;                          // kToken: the new token id
  // kToken, when the request asked for logprobs (StepSampling): the token's log probability and
  // the most likely tokens', best first.
  bool has_logprobs = false;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
  // kPromptLogprobs, when the request asked for prompt_logprobs: the log probabilities of prompt
  // tokens [prompt_position, prompt_position + prompt_logprobs.size()), in order. Every prompt
  // token but the first (which has no context) is reported exactly once, in chunks, before the
  // request's first kToken event.
  int32_t prompt_position = 0;
  std::vector<ScoredToken> prompt_logprobs;
  FinishReason finish_reason = FinishReason::kNone;  // kFinished
  // kFinished: OK for kLength and kStop; CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE (replica
  // failed, drain timed out, scheduler stopped), INVALID_ARGUMENT or RESOURCE_EXHAUSTED
  // (rejected after admission, e.g. no replica can hold it any more) otherwise.
  Status status;
  RequestUsage usage;                          // kFinished
};

// Receives a request's events on the scheduler's thread, in order, never concurrently for one
// request. Must be cheap and must not block (queue the event and return); it may call
// Scheduler::Cancel. The callable is destroyed after the kFinished event.
using RequestSink = std::function<void(const RequestEvent&)>;

struct GenerateRequest {
  std::vector<int32_t> prompt;   // token ids, at least one
  StepSampling sampling;
  int32_t max_tokens = 16;       // tokens to generate, >= 1
  bool ignore_eos = false;       // keep generating after an end-of-generation token
  // Report the log probability of every prompt token after the first, with
  // sampling.top_logprobs alternatives (kPromptLogprobs events). Those need the logits at every
  // prompt position: the prefix cache's KV is shared only as far as the prompt score cache holds
  // their values (docs/scheduler.md).
  bool prompt_logprobs = false;
  // What the output may be (response_format json_object); null: anything. Not with ignore_eos.
  std::shared_ptr<OutputConstraint> constraint;
  // Prefix-sharing domain, derived server-side from the authenticated identity (DESIGN.md §6):
  // only requests with equal salts share cached KV blocks.
  std::string tenant_salt;
  std::string tenant_id;         // for logs
  std::string request_id;        // the client-visible id, for logs
  Clock::time_point deadline = Clock::time_point::max();
  RequestSink sink;              // required
};

}  // namespace bitfleet::coordinator

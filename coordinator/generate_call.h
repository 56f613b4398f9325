// One accepted generation, independent of the transport that carries it (the gRPC Generate
// stream, the OpenAI-compatible HTTP API): submits a validated request to the Scheduler and
// turns its events into GenerateResponse messages (inference.proto): token ids as they are
// sampled, text deltas from an incremental decoder (whole characters only), stop strings matched
// on that text (the match calls Scheduler::Cancel with finish reason stop, and the stop string is
// not returned), then one last message with the finish reason and usage.
//
// Two phases, so that a transport can answer a refused request with its own error before it
// commits to a response (HTTP status line, gRPC headers): Submit (the scheduler's admission),
// then Run (the events, to the end). A call destroyed before its request ended cancels it, so a
// transport that drops a call (a client gone before Run) frees its blocks at the next iteration.
//
// Threading: Run blocks the calling thread; it waits on the request's event queue (filled by the
// scheduler's sink, which never blocks) and polls GenerateOutput::ClientGone between events.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bitfleet/v1/inference.pb.h"
#include "coordinator/api_auth.h"
#include "coordinator/api_request.h"
#include "coordinator/metrics.h"
#include "coordinator/request.h"
#include "coordinator/scheduler.h"
#include "core/status.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {

// A seed for requests that name none (one random engine per thread, seeded once).
uint64_t RandomSeed();

// Client-visible request ids, "<kind>-<6 hex digits>-<n>": the hex part is random per process,
// so ids differ across restarts. Thread-safe.
class RequestIds {
 public:
  RequestIds();
  std::string Next(const char* kind);

 private:
  const uint64_t prefix_;
  std::atomic<uint64_t> next_{1};
};

// The caller's tenant from its "authorization" value ("" when it sent none): the anonymous
// tenant when `keys` is null, else ApiKeys::Authenticate's answer. A refusal is logged (debug,
// naming `peer`) and counted in bitfleet_api_unauthenticated_total{api}.
StatusOr<Tenant> AuthorizeCall(const ApiKeys* keys, std::string_view authorization, const std::string& peer,
                               const char* api, MetricsRegistry& metrics);

// A token's bytes as the log probabilities show them (a leading space kept, special tokens by
// name); empty for an id outside the vocabulary.
std::string TokenBytes(const tokenizer::Tokenizer& tokenizer, int32_t id);

// Where a call's messages go.
class GenerateOutput {
 public:
  virtual ~GenerateOutput() = default;
  // Delivers one message; false when the client is gone (the call then cancels its request).
  virtual bool Write(const v1::GenerateResponse& message) = 0;
  // True once the client cancelled or went away; polled between events.
  virtual bool ClientGone() = 0;
};

struct GenerateCallOptions {
  // How often a waiting call checks GenerateOutput::ClientGone.
  std::chrono::milliseconds cancel_poll{20};
  // When the transport received the call and when its request was parsed (the first token's
  // timeline in the debug log).
  Clock::time_point received;
  Clock::time_point parsed;
};

class GenerateCall {
 public:
  // Submits `parsed` (whose request carries its deadline and request id) for `tenant`, whose
  // cache salt keeps its prefix blocks to itself or its group (DESIGN.md §6); the sink is set
  // here. The scheduler's refusal comes back as is: UNAVAILABLE (draining, no ready replica),
  // RESOURCE_EXHAUSTED (queue full, larger than the KV pool), INVALID_ARGUMENT.
  static StatusOr<std::unique_ptr<GenerateCall>> Submit(Scheduler& scheduler, const tokenizer::Tokenizer& tokenizer,
                                                        ParsedGenerate parsed, const Tenant& tenant,
                                                        GenerateCallOptions options);
  // Cancels the request when Run did not see it end.
  ~GenerateCall();
  GenerateCall(const GenerateCall&) = delete;
  GenerateCall& operator=(const GenerateCall&) = delete;

  // For the debug log's timeline: the transport's response headers went out now.
  void MarkHeadersSent();
  // Streams the request's messages to `output` until it ends; call once. Returns the final
  // status: OK after a finish (the last message carries its reason and usage), the scheduler's
  // error status otherwise (tokens produced before it were written), CANCELLED when the client
  // went away.
  Status Run(GenerateOutput& output);

  const std::string& request_id() const { return request_id_; }
  size_t prompt_tokens() const { return prompt_tokens_; }

 private:
  // One log-probability entry: the token's, and its alternatives'.
  void FillLogprobs(int32_t token, float logprob, std::span<const TokenLogprob> top, v1::TokenLogprobs* out) const;
  struct EventQueue;
  GenerateCall(Scheduler& scheduler, const tokenizer::Tokenizer& tokenizer, GenerateCallOptions options);
  void Cancel(FinishReason reason);

  Scheduler& scheduler_;
  const tokenizer::Tokenizer& tokenizer_;
  const GenerateCallOptions options_;
  std::shared_ptr<EventQueue> queue_;
  RequestId id_ = 0;
  std::string request_id_;
  size_t prompt_tokens_ = 0;
  std::vector<int32_t> prompt_;  // kept only for the prompt's log probabilities
  uint64_t seed_ = 0;
  std::vector<std::string> stop_;
  Clock::time_point submitted_;
  std::optional<Clock::time_point> headers_sent_;
  std::optional<Clock::time_point> cancelled_at_;
  bool ended_ = false;  // Run saw the finish (or gave up on it)
};

}  // namespace bitfleet::coordinator

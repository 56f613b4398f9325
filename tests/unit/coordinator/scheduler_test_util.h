// Helpers for scheduler tests: a thread-safe collector of request events and request builders.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "coordinator/request.h"
#include "coordinator/scheduler.h"

namespace bitfleet::coordinator::testing {

struct Outcome {
  std::vector<int32_t> tokens;
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  Status status;
  RequestUsage usage;
  int events_after_finish = 0;  // must stay 0
  // kPromptLogprobs events, flattened: the prompt position of each entry, and the entry.
  std::vector<int32_t> scored_positions;
  std::vector<ScoredToken> scored;
  int scores_after_tokens = 0;  // kPromptLogprobs events after a kToken one: must stay 0
};

class Collector {
 public:
  // A sink recording the events of the request the test calls `key`.
  RequestSink Sink(int key);
  Outcome Get(int key) const;
  int finished() const;
  // Waits until `n` requests have finished; false on timeout.
  bool WaitFinished(int n, std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<int, Outcome> outcomes_;
  int finished_ = 0;
};

// Options for a scheduler over FakeExecutors: vocabulary 1000, context 512, invariants checked
// after every step.
SchedulerOptions TestOptions(int32_t block_size = 4);
// Scheduler::Create, failing the test on an error (null then).
std::unique_ptr<Scheduler> MakeScheduler(const SchedulerOptions& options, std::vector<Executor*> replicas);
// New tokens in a plan, summed over its sequences.
int64_t TokensIn(const StepPlan& plan);

// Greedy request for `prompt` with `max_tokens`, reporting to collector key `key`.
GenerateRequest MakeRequest(Collector& collector, int key, std::vector<int32_t> prompt, int max_tokens,
                            const std::string& salt = "tenant-a");

// MakeRequest asking for the prompt's log probabilities with `top` alternatives.
GenerateRequest ScoringRequest(Collector& collector, int key, const std::vector<int32_t>& prompt, int max_tokens,
                               int top, const std::string& salt = "tenant-a");
// Every prompt token after the first reported once, in order, before any generated token, with
// the FakeExecutor's value for its context (FakePromptLogprob) and `top` alternatives.
void ExpectPromptScored(const Outcome& out, const std::vector<int32_t>& prompt, int top);

// Deterministic prompt of `n` tokens in [3, n_vocab).
std::vector<int32_t> MakePrompt(int n, uint32_t seed, int32_t n_vocab = 1000);

// Runs iterations until no request is live (at most max_iterations); returns iterations run.
int RunUntilIdle(Scheduler& scheduler, int max_iterations = 100000);

}  // namespace bitfleet::coordinator::testing

#include "tests/unit/coordinator/scheduler_test_util.h"

#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"

namespace bitfleet::coordinator::testing {

RequestSink Collector::Sink(int key) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    outcomes_[key] = Outcome{};
  }
  return [this, key](const RequestEvent& event) {
    std::lock_guard<std::mutex> lock(mu_);
    Outcome& o = outcomes_[key];
    if (o.finished) {
      ++o.events_after_finish;
      return;
    }
    if (event.kind == RequestEvent::Kind::kToken) {
      o.tokens.push_back(event.token);
      return;
    }
    if (event.kind == RequestEvent::Kind::kPromptLogprobs) {
      if (!o.tokens.empty()) ++o.scores_after_tokens;
      for (size_t j = 0; j < event.prompt_logprobs.size(); ++j) {
        o.scored_positions.push_back(event.prompt_position + static_cast<int32_t>(j));
        o.scored.push_back(event.prompt_logprobs[j]);
      }
      return;
    }
    o.finished = true;
    o.reason = event.finish_reason;
    o.status = event.status;
    o.usage = event.usage;
    ++finished_;
    cv_.notify_all();
  };
}

Outcome Collector::Get(int key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = outcomes_.find(key);
  return it == outcomes_.end() ? Outcome{} : it->second;
}

int Collector::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

bool Collector::WaitFinished(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return finished_ >= n; });
}

SchedulerOptions TestOptions(int32_t block_size) {
  SchedulerOptions options;
  options.model_id = "fake-model";
  options.n_vocab = 1000;
  options.max_context = 512;
  options.kv_block_size = block_size;
  options.check_invariants = true;
  return options;
}

std::unique_ptr<Scheduler> MakeScheduler(const SchedulerOptions& options, std::vector<Executor*> replicas) {
  auto scheduler = Scheduler::Create(options, std::move(replicas));
  EXPECT_TRUE(scheduler.ok()) << scheduler.status();
  return scheduler.ok() ? std::move(*scheduler) : nullptr;
}

int64_t TokensIn(const StepPlan& plan) {
  int64_t n = 0;
  for (const SequencePlan& seq : plan.sequences) n += static_cast<int64_t>(seq.tokens.size());
  return n;
}

GenerateRequest MakeRequest(Collector& collector, int key, std::vector<int32_t> prompt, int max_tokens,
                            const std::string& salt) {
  GenerateRequest request;
  request.prompt = std::move(prompt);
  request.max_tokens = max_tokens;
  request.tenant_salt = salt;
  request.request_id = "req-" + std::to_string(key);
  request.sink = collector.Sink(key);
  return request;
}

GenerateRequest ScoringRequest(Collector& collector, int key, const std::vector<int32_t>& prompt, int max_tokens,
                               int top, const std::string& salt) {
  GenerateRequest request = MakeRequest(collector, key, prompt, max_tokens, salt);
  request.prompt_logprobs = true;
  request.sampling.top_logprobs = top;
  return request;
}

void ExpectPromptScored(const Outcome& out, const std::vector<int32_t>& prompt, int top) {
  ASSERT_EQ(out.scored_positions.size(), prompt.size() - 1);
  EXPECT_EQ(out.scores_after_tokens, 0);
  for (size_t t = 1; t < prompt.size(); ++t) {
    ASSERT_EQ(out.scored_positions[t - 1], static_cast<int32_t>(t));
    const ScoredToken& scored = out.scored[t - 1];
    EXPECT_EQ(scored.logprob, FakePromptLogprob(std::span<const int32_t>(prompt.data(), t), prompt[t])) << t;
    ASSERT_EQ(scored.top_logprobs.size(), static_cast<size_t>(top));
    for (int k = 0; k < top; ++k) EXPECT_EQ(scored.top_logprobs[k].token, (prompt[t] + k) % 1000);
  }
}

std::vector<int32_t> MakePrompt(int n, uint32_t seed, int32_t n_vocab) {
  std::vector<int32_t> prompt;
  uint32_t x = seed * 2654435761u + 12345u;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    prompt.push_back(static_cast<int32_t>(3 + (x >> 8) % static_cast<uint32_t>(n_vocab - 3)));
  }
  return prompt;
}

int RunUntilIdle(Scheduler& scheduler, int max_iterations) {
  int iterations = 0;
  while (scheduler.Stats().live > 0 && iterations < max_iterations) {
    scheduler.RunIteration();
    ++iterations;
  }
  return iterations;
}

}  // namespace bitfleet::coordinator::testing

// A deterministic Executor for scheduler tests that checks the scheduler's KV bookkeeping for
// real: it keeps a fake paged KV cache (one token id per slot), writes each plan's tokens at
// their positions through the plan's block table, and computes the next token from the context
// it reads back through the block table. A wrong block table, a shared block overwritten, a
// stale block reused or a skipped recompute therefore changes the generated text, which the
// tests compare against ExpectedTokens (the same function run on each request alone).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <unordered_set>
#include <vector>

#include "coordinator/executor.h"

namespace bitfleet::coordinator::testing {

// Next token from the whole context (prompt and generated so far).
using NextTokenFn = std::function<int32_t(std::span<const int32_t> context)>;

// FNV-1a of the context, folded into [3, n_vocab) (ids 0-2 stay free for EOS tests).
NextTokenFn HashNextToken(int32_t n_vocab);

// A constrained plan (SequencePlan::allowed_tokens) gets the first allowed token from that
// choice on, in id order, wrapping around.
// The log probabilities a FakeExecutor reports for a sequence that asks: the sampled token ranks
// first, and the k-th alternative is token + k (mod n_vocab) with FakeLogprob(token, k).
float FakeLogprob(int32_t token, int rank);
// The log probability a FakeExecutor reports for scoring `token` after `context` (read back
// through the block table, so a wrong table changes it); its k-th alternative is token + k
// (mod n_vocab), 0.125 k less likely.
float FakePromptLogprob(std::span<const int32_t> context, int32_t token);

// What one request generates alone: apply `next` until max_tokens or an id in `eos`.
std::vector<int32_t> ExpectedTokens(const NextTokenFn& next, std::vector<int32_t> prompt, int max_tokens,
                                    const std::unordered_set<int32_t>& eos = {});

struct FakeExecutorOptions {
  int32_t kv_blocks = 64;
  int32_t block_size = 4;
  int32_t max_step_tokens = 32;
  int32_t max_step_sequences = 8;
  int32_t n_vocab = 1000;
  int32_t max_logit_rows = 0;  // 0: max_step_sequences
  int32_t max_draft_tokens = kMaxDraftTokens;
};

class FakeExecutor final : public Executor {
 public:
  explicit FakeExecutor(const FakeExecutorOptions& options, NextTokenFn next = nullptr);

  // Validates the plan like a worker (INVALID_ARGUMENT / RESOURCE_EXHAUSTED, nothing written),
  // writes the tokens, samples. INTERNAL when a sampled context reads a slot never written.
  StatusOr<StepResult> Execute(const StepPlan& plan) override;
  int32_t kv_blocks() const override { return options_.kv_blocks; }
  int32_t kv_block_size() const override { return options_.block_size; }
  int32_t max_step_tokens() const override { return options_.max_step_tokens; }
  int32_t max_step_sequences() const override { return options_.max_step_sequences; }
  int32_t max_logit_rows() const override {
    return options_.max_logit_rows > 0 ? options_.max_logit_rows : options_.max_step_sequences;
  }
  int32_t max_draft_tokens() const override { return options_.max_draft_tokens; }
  bool healthy() const override;
  uint64_t incarnation() const override;

  void set_healthy(bool healthy);
  // The next `n` Execute calls return `status` without doing anything.
  void FailNextSteps(int n, Status status);
  // Every plan executed successfully so far (copies).
  std::vector<StepPlan> plans() const;
  int64_t tokens_executed() const;
  // Clears the KV slots (a restarted replica).
  void WipeKv();
  // A restart in place: the KV is wiped and incarnation() changes.
  void Restart();

 private:
  Status Validate(const StepPlan& plan) const;

  const FakeExecutorOptions options_;
  const NextTokenFn next_;
  mutable std::mutex mu_;
  bool healthy_ = true;
  uint64_t incarnation_ = 0;
  int failures_left_ = 0;
  Status failure_;
  std::vector<int32_t> kv_;  // kv_blocks × block_size slots, -1 = never written
  std::vector<StepPlan> plans_;
  int64_t tokens_executed_ = 0;
};

}  // namespace bitfleet::coordinator::testing

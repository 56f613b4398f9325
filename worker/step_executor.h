// Runs one coordinator StepPlan (coordinator/executor.h) on this rank: one StepRunner::Step
// over the plan's sequences, then the next token of every sequence the plan asks to sample.
// Every rank of a replica runs the same plan; the answer is the same on every rank.
//
// Sampling: whole logit rows (TP=1, or a runner gathering logits) go through worker::Sampler;
// vocabulary slices (TP>1) through worker::DistributedSampler, a collective over the runner's
// communicator. Both follow worker/sampler.h exactly. Log probabilities, for the sequences that
// ask, come from worker/token_logprobs.h the same two ways: the sampled token's, and those of a
// prompt chunk's score_tokens (the step then returns every row of that sequence).
//
// Reproducibility: the n-th token a sequence samples (plan.sample_index = n) uses the n-th
// uniform draw of Rng(sampling.seed) — the same stream `bitfleet run` uses — whatever the batch,
// preemptions or replica. The executor keeps each sequence's stream positioned for its next
// sample; after a gap (a preemption, another replica, a lost entry) it reseeds and skips ahead.
// plan.released_sequences drops streams of finished sequences. A drafting sequence
// (SequencePlan::draft_tokens) samples once per draft more, each with the next draw.
//
// Thread-safety: one Execute at a time (the runner's contract). The runner must outlive this.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>

#include "coordinator/executor.h"
#include "core/status.h"
#include "worker/distributed_sampling.h"
#include "worker/step_runner.h"
#include "worker/rng.h"
#include "worker/sampler.h"
#include "worker/token_logprobs.h"

namespace bitfleet::worker {

SamplingParams ToSamplingParams(const coordinator::StepSampling& sampling);

class StepExecutor {
 public:
  explicit StepExecutor(StepRunner& runner);

  // INVALID_ARGUMENT for a malformed plan (bad sampling values, sample_index beyond the
  // context, anything StepRunner::Step rejects) and RESOURCE_EXHAUSTED beyond the step limits,
  // both before any KV is written; other errors (a communicator failure under TP) mean this
  // rank's group is broken.
  StatusOr<coordinator::StepResult> Execute(const coordinator::StepPlan& plan);

  StepRunner& runner() { return runner_; }
  // Sequences and tokens fed through the model since construction (tests count prefill work).
  int64_t steps_executed() const { return steps_executed_; }
  int64_t tokens_executed() const { return tokens_executed_; }

 private:
  struct SequenceRng {
    uint64_t seed = 0;
    uint64_t next_index = 0;  // sample_index the stream is positioned for
    Rng rng;
  };

  Status Validate(const coordinator::StepPlan& plan) const;
  // The allowed-token mask of sample row `row` of `seq` (0: after its last real token, i: after
  // draft i): a drafting constrained plan carries one per row, end to end; empty: any token.
  std::span<const uint64_t> RowMask(const coordinator::SequencePlan& seq, int32_t row) const;
  // The stream of `seq`, positioned at its sample_index.
  Rng& RngFor(const coordinator::SequencePlan& seq);
  // Fills the token (and draft_samples) of every result sequence whose plan samples; `result`
  // holds one entry per plan sequence, token -1.
  Status SampleAll(const coordinator::StepPlan& plan, const StepLogits& logits, coordinator::StepResult* result);
  struct LogprobRowOf {
    size_t sequence;  // plan index
    int32_t scored;   // index into its score_tokens, or -1 for the sampled token
  };
  // The log probabilities of every plan sequence's score_tokens and of the sampled `tokens` of
  // those whose sampling asks for them (a collective under TP, taken by every rank or none):
  // out[r] is row rows_of[r]; a sequence's scored rows come in score_tokens order.
  Status LogprobsAll(const coordinator::StepPlan& plan, const StepLogits& logits,
                     const coordinator::StepResult& sampled,
                     std::vector<TokenLogprobs>* out, std::vector<LogprobRowOf>* rows_of);

  StepRunner& runner_;
  Sampler sampler_;
  std::unique_ptr<DistributedSampler> distributed_;  // when rows are vocabulary slices
  std::unordered_map<uint64_t, SequenceRng> rngs_;
  std::vector<SequenceStep> batch_;
  std::vector<std::vector<int32_t>> histories_;      // per sample row: history + tokens fed up to it
  std::vector<Rng> draft_rngs_;                       // the streams of draft rows, each one draw on
  std::vector<SamplingParams> params_;
  Rng unused_rng_;                                    // greedy rows never draw
  std::unique_ptr<ThreadPool> logprob_pool_;          // the logprobs' rows in parallel
  int64_t steps_executed_ = 0;
  int64_t tokens_executed_ = 0;
  std::shared_ptr<spdlog::logger> log_;
};

}  // namespace bitfleet::worker

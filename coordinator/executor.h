// The boundary between the scheduler and the ranks that run the model (DESIGN.md §3, §7).
//
// Every iteration the scheduler builds one StepPlan per replica and hands it to that
// replica's Executor; every rank of the replica runs the same plan on its shard and the
// replica answers one StepResult with one sampled token per sequence (sampling is reduced
// across ranks, so only token ids come back). Implementations: an in-process executor over a
// worker::ModelRunner (tests, one-box), and the gRPC executor client that streams plans to the
// worker processes of a replica (control.proto mirrors these structs field by field).
//
// These structs are plain C++ so the scheduler and its tests need neither gRPC nor kernels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace bitfleet::coordinator {

// Sampling parameters as the workers apply them (see worker/sampler.h for the semantics).
// The most alternatives StepSampling.top_logprobs may ask for (OpenAI's bound).
inline constexpr int32_t kMaxTopLogprobs = 20;
// OpenAI's logit_bias: `bias` is added to the token's logit before the penalties and filters
// (worker/sampler.h). At most kMaxLogitBias entries, each in [-kMaxLogitBiasValue, +].
struct TokenBias {
  int32_t token = 0;
  float bias = 0.0f;
  bool operator==(const TokenBias&) const = default;
};
inline constexpr int32_t kMaxLogitBias = 1024;
inline constexpr float kMaxLogitBiasValue = 100.0f;

struct StepSampling {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t penalty_last_n = 64;
  uint64_t seed = 0;
  // Return the sampled token's log probability (the model's raw distribution:
  // worker/token_logprobs.h) and those of the top_logprobs most likely tokens (0..20).
  bool logprobs = false;
  int32_t top_logprobs = 0;
  std::vector<TokenBias> logit_bias;  // distinct tokens in ascending order
};

// The most draft tokens one sequence plan may carry (speculative decoding; each costs a logit
// row): what workers accept and the bound of --speculative-tokens.
inline constexpr int32_t kMaxDraftTokens = 16;

struct SequencePlan {
  uint64_t sequence_id = 0;            // stable for the life of the request (RNG stream key)
  std::vector<int32_t> tokens;         // new tokens: a prefill chunk or one decode token
  int32_t start_pos = 0;               // position of tokens[0]
  std::vector<int32_t> block_table;    // covers [0, start_pos + tokens.size())
  bool sample = true;                  // false for a prefill chunk that is not the last one
  StepSampling sampling;
  // Penalty history the sampler needs beyond this step's tokens: the last penalty_last_n
  // tokens of the sequence before `tokens` (prompt and generated; all of them when
  // penalty_last_n is -1). Empty when sample is false or no penalty is active.
  std::vector<int32_t> history;
  // How many tokens this sequence sampled before (RNG offset). A sequence's n-th sample uses
  // the n-th draw of the stream Rng(sampling.seed), so the same seed reproduces the same text
  // whatever the batch, and after a preemption or on another replica.
  uint64_t sample_index = 0;
  // Prompt scoring (GenerateRequest::prompt_logprobs): the result's scored[j] is the log
  // probability of score_tokens[j] under the logits at position start_pos + j (the token that
  // follows tokens[j] in the prompt), with sampling.top_logprobs alternatives. At most
  // tokens.size() entries; a plan with any makes the step return one logit row per token of this
  // sequence, and such rows count against max_logit_rows() with one row per other sequence.
  std::vector<int32_t> score_tokens;
  // Constrained decoding: the tokens the sample may take, one bit each (bit t % 64 of word
  // t / 64, (n_vocab + 63) / 64 words, at least one set); empty: any token.
  std::vector<uint64_t> allowed_tokens;
  // Speculative decoding (docs/scheduler.md): the last draft_tokens of `tokens` are a guess at
  // what the sequence generates next. The step then samples after each of the last
  // draft_tokens + 1 tokens (one logit row each): SequenceResult::token after the last real
  // token, draft_samples[i] after draft i, the i-th with sample_index + i + 1 and a penalty
  // history running through the tokens fed before it. Each sample is exactly what a step fed up
  // to that token would draw, so the coordinator keeps draft i while it equals the sample before
  // it. Requires sample, no score_tokens, no logprobs; allowed_tokens, if any, then holds one
  // mask per sample (draft_tokens + 1 of them, end to end: the one after the last real token,
  // then the one after each draft).
  int32_t draft_tokens = 0;
};

struct StepPlan {
  uint64_t step_id = 0;
  std::vector<SequencePlan> sequences;
  // Sequences that finished or were preempted since the previous plan: ranks may drop their
  // per-sequence state (RNG streams). Advisory: state is always rebuildable from the plan.
  std::vector<uint64_t> released_sequences;
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

// One scored position: a token's log probability and the most likely tokens', best first.
struct ScoredToken {
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
};

struct SequenceResult {
  SequenceResult() = default;
  SequenceResult(uint64_t id, int32_t sampled) : sequence_id(id), token(sampled) {}

  uint64_t sequence_id = 0;
  int32_t token = -1;                  // sampled token, -1 when the plan said sample=false
  // When the plan's sampling asked for logprobs: the sampled token's log probability and the
  // top_logprobs most likely tokens', best first.
  bool has_logprobs = false;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
  std::vector<ScoredToken> scored;     // one per plan score_tokens entry
  std::vector<int32_t> draft_samples;  // one per plan draft token: the sample after it
};

struct StepResult {
  uint64_t step_id = 0;
  std::vector<SequenceResult> sequences;  // same order as the plan
};

// Runs plans on one replica.
//
// Threading: Execute is called by one thread at a time (the scheduler's dispatch thread for
// this replica; not necessarily the same thread every call) and may block for the step's
// duration. The other methods may be called from any thread and must be thread-safe, cheap and
// non-blocking (the scheduler polls healthy() under its lock).
//
// Errors: INVALID_ARGUMENT or RESOURCE_EXHAUSTED mean the plan was rejected before any KV was
// written: the scheduler fails the plan's sequences and keeps the replica. Any other error
// (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ...) means the replica failed: the scheduler
// fails every sequence on it and forgets its KV metadata (the storage may be gone).
//
// Capacity: read when the replica turns healthy, and again when incarnation() changes; it may
// change across a restart. kv_block_size must equal the scheduler's block size.
class Executor {
 public:
  virtual ~Executor() = default;
  virtual StatusOr<StepResult> Execute(const StepPlan& plan) = 0;
  // Capacity the replica registered with.
  virtual int32_t kv_blocks() const = 0;
  virtual int32_t kv_block_size() const = 0;
  virtual int32_t max_step_tokens() const = 0;      // new tokens per plan, summed over sequences
  virtual int32_t max_step_sequences() const = 0;   // sequences per plan
  // Logit rows per plan: each sequence gets one, a scored one one per token
  // (SequencePlan::score_tokens), a drafting one one per draft more. At least
  // max_step_sequences().
  virtual int32_t max_logit_rows() const { return max_step_sequences(); }
  // Draft tokens one sequence plan may carry (SequencePlan::draft_tokens); 0: none (the default,
  // for executors whose workers predate speculative decoding).
  virtual int32_t max_draft_tokens() const { return 0; }
  virtual bool healthy() const = 0;
  // Changes whenever the replica's KV storage may have been lost (its group restarted and
  // registered again). The scheduler then forgets the replica's KV metadata and fails its
  // requests. The default suits executors that never restart in place.
  virtual uint64_t incarnation() const { return 0; }
};

}  // namespace bitfleet::coordinator

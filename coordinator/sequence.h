// The scheduler's record of one request while it lives (internal to coordinator/).
//
// A sequence's state is its token list (prompt, then generated tokens) and how many of those
// have KV in its replica's cache (num_computed). Everything else derives from those two: the
// next tokens to feed are tokens[num_computed, size), a step samples when it feeds the last
// one, and a preempted sequence simply restarts with num_computed = 0 (its cached blocks make
// the recompute cheap).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/block_hash.h"
#include "coordinator/draft_index.h"
#include "coordinator/draft_proposer.h"
#include "coordinator/executor.h"
#include "coordinator/request.h"

namespace bitfleet::coordinator {

struct Sequence {
  RequestId id = 0;  // submission order: lower is older (preemption takes the newest)
  std::shared_ptr<const RequestSink> sink;
  StepSampling sampling;
  int32_t max_tokens = 0;
  bool ignore_eos = false;
  Clock::time_point deadline = Clock::time_point::max();
  std::string tenant_id;
  std::string request_id;
  cache::BlockHashScope hash_scope;  // tenant salt + model id of every block hash

  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int32_t prompt_len = 0;
  // Chained hashes of the full blocks of `tokens` computed so far (the prompt's at submission,
  // generated blocks as they fill).
  std::vector<cache::BlockHash> block_hashes;
  int32_t num_computed = 0;     // tokens[0, num_computed) have KV in the replica's cache
  // With prompt_logprobs: prompt tokens [1, prompt_scored) have had their log probabilities
  // reported. Scoring token t needs the logits at position t - 1, so until prompt_scored reaches
  // prompt_len no more than prompt_scored - 1 tokens may come from the prefix cache.
  bool prompt_logprobs = false;
  int32_t prompt_scored = 1;
  // Reported scores of the prompt tokens of the block that token prompt_scored is in, gathered
  // for the PromptScoreCache until the block is whole (they may come over several chunks).
  std::vector<ScoredToken> block_scores;
  std::shared_ptr<OutputConstraint> constraint;  // null: unconstrained output
  DraftAcceptance drafts;  // speculative decoding: how this sequence's drafts fare
  DraftIndex draft_index;  // and where its drafts come from (indexed once it is long)

  int replica = -1;
  bool admitted_once = false;
  bool preempted_this_step = false;  // not readmitted in the step that preempted it
  // Set by Cancel; the scheduler finishes the sequence at the next iteration.
  FinishReason cancel_reason = FinishReason::kNone;

  RequestUsage usage;
  Clock::time_point arrival;
  Clock::time_point admitted;  // first admission to a batch: queueing ends, prefill starts
  Clock::time_point last_token_time;

  int32_t generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len; }
  // Tokens still to feed (1 for a sequence in decode).
  int32_t pending() const { return static_cast<int32_t>(tokens.size()) - num_computed; }
  // Whether prompt tokens remain to be scored.
  bool scoring() const { return prompt_logprobs && prompt_scored < prompt_len; }
};

}  // namespace bitfleet::coordinator

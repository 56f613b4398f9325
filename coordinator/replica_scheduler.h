// The scheduling of one replica, one iteration at a time (docs/scheduler.md): which sequences
// run in the next step and with how many tokens, KV block allocation, prefix reuse, preemption,
// and applying the step's sampled tokens. No threads and no I/O: the Scheduler calls it under
// its lock, hands the plan to the replica's Executor and brings the result back.
//
// Iteration contract: BuildPlan → (the executor runs the plan) → ApplyResult, then Reap and
// BuildPlan again. Between BuildPlan and ApplyResult the sequences of the plan are in flight and
// nothing but ApplyResult may touch the replica's sequences; Enqueue is always allowed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <unordered_set>
#include <vector>

#include "cache/block_manager.h"
#include "coordinator/draft_proposer.h"
#include "coordinator/executor.h"
#include "coordinator/prompt_score_cache.h"
#include "coordinator/sequence.h"
#include "core/status.h"

namespace bitfleet::coordinator {

// What happens to sequences, reported in order as it happens (the Scheduler turns it into
// request events and metrics).
class SequenceObserver {
 public:
  virtual ~SequenceObserver() = default;
  // `first`: the sequence's first admission (not a readmission after preemption).
  virtual void OnAdmitted(Sequence& seq, bool first, int32_t cached_tokens) = 0;
  virtual void OnPreempted(Sequence& seq) = 0;
  // Log probabilities of prompt tokens [first, first + scored.size()) of a sequence that asked
  // for prompt_logprobs; each prompt token after the first is reported once, in order.
  // `from_cache`: kept from an earlier request (PromptScoreCache), not computed by a step.
  virtual void OnPromptLogprobs(Sequence& seq, int32_t first, std::span<const ScoredToken> scored,
                                bool from_cache) = 0;
  virtual void OnToken(Sequence& seq, const SequenceResult& sampled) = 0;
  virtual void OnFinished(std::unique_ptr<Sequence> seq, FinishReason reason, Status status) = 0;
};

struct ReplicaConfig {
  int32_t block_size = 16;
  int32_t n_vocab = 0;
  std::vector<int32_t> end_of_generation;
  bool prefix_caching = true;
  int32_t max_prefill_chunk = 0;  // 0: the step budget
  DraftOptions draft;             // speculative decoding (draft.max_tokens 0: off)
};

struct ReplicaCapacity {
  int32_t kv_blocks = 0;
  int32_t max_step_tokens = 0;
  int32_t max_step_sequences = 0;
  int32_t max_logit_rows = 0;  // at least max_step_sequences
  int32_t max_draft_tokens = 0;  // per sequence plan; 0: no speculative decoding here
  bool operator==(const ReplicaCapacity&) const = default;
};

class ReplicaScheduler {
 public:
  // `scores` (optional, not owned, shared by the replicas; needs config.prefix_caching): where
  // scored prompts keep and find the scores of their full blocks.
  ReplicaScheduler(int index, const ReplicaConfig& config, SequenceObserver& observer,
                   PromptScoreCache* scores = nullptr);

  int index() const { return index_; }
  // (Re)starts with a fresh block pool of the given capacity. Requires no sequences.
  void Configure(const ReplicaCapacity& capacity);
  const ReplicaCapacity& capacity() const { return capacity_; }

  // Queues a routed sequence (new, or moved here); it runs when blocks and budget allow.
  void Enqueue(std::unique_ptr<Sequence> seq);
  // Finishes cancelled and expired sequences (frees their blocks). Not while in flight.
  void Reap(Clock::time_point now);
  // The next step: running decodes first, then running prefills (chunked), then admissions
  // from the waiting queue in submission order, within the token budget; preempts the newest
  // running sequence when blocks run out. An empty plan when there is nothing to run.
  StepPlan BuildPlan();
  bool in_flight() const { return !scheduled_.empty(); }
  // Applies the step's result to the sequences of the last plan. A rejected plan
  // (INVALID_ARGUMENT, RESOURCE_EXHAUSTED) fails its sequences; any other error, or a result
  // that does not match the plan, fails the replica (FailAll).
  void ApplyResult(const StatusOr<StepResult>& result);
  // Finishes every sequence with `reason` and `status`, freeing blocks normally.
  void FinishAll(FinishReason reason, const Status& status);
  // The replica failed: finishes everything with kError and `status` and forgets all KV
  // metadata (the storage is gone).
  void FailAll(const Status& status);

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  // Prefill tokens queued or in progress here (routing load).
  int64_t PendingPrefillTokens() const;
  const cache::BlockManager& blocks() const { return blocks_; }
  // Tokens fed as prefill (prompt chunks and recomputes) since construction.
  int64_t prefill_tokens_total() const { return prefill_tokens_total_; }
  // Speculative decoding since construction: draft tokens fed, and those the model generated
  // (kept; each saved a step).
  int64_t draft_tokens_total() const { return draft_tokens_total_; }
  int64_t accepted_draft_tokens_total() const { return accepted_draft_tokens_total_; }

  // The block manager's invariants, plus: every running sequence has a table covering its
  // computed tokens, no waiting sequence holds blocks.
  Status CheckInvariants() const;

 private:
  struct Scheduled {
    Sequence* seq;
    int32_t n_tokens;  // of seq->tokens, from num_computed
    bool decode;       // one generated token (not a prefill or recompute chunk)
    int32_t n_scored;  // prompt tokens the chunk scores (SequencePlan::score_tokens)
    std::vector<int32_t> draft;  // guessed tokens fed after the decode token
    // A constrained sequence's masks after each draft token (draft.size() masks, end to end).
    std::vector<uint64_t> draft_masks;
    int32_t probe = -1;  // a draft's first token not fed (DraftAcceptance), or -1
    // Tokens the step feeds for it, and logit rows it returns.
    int32_t tokens() const { return n_tokens + static_cast<int32_t>(draft.size()); }
    int32_t rows() const { return n_scored > 0 ? n_tokens : 1 + static_cast<int32_t>(draft.size()); }
  };
  // What is left of one step's limits: new tokens, and logit rows (max_logit_rows).
  struct StepBudget {
    int32_t tokens;
    int32_t rows;
  };

  // Tokens of `seq`'s next chunk, from position `from` (its computed or attached tokens), within
  // the budget and the chunk cap.
  int32_t ChunkFor(const Sequence& seq, int32_t from, const StepBudget& budget) const;
  // Positions from `from` whose logits score prompt tokens reported already, when they are a
  // block or more (a recompute after a preemption; cached scores without their KV): those go in
  // unscored chunks of their own. Fewer are scored again and dropped, which saves a step. 0 if none.
  int32_t ScoredAlready(const Sequence& seq, int32_t from) const;
  // Prompt tokens a chunk of `n` tokens from seq.num_computed scores.
  int32_t ScoredTokens(const Sequence& seq, int32_t n) const;
  // The plan entry for `n` tokens of `seq`, without a draft.
  Scheduled Entry(Sequence* seq, int32_t n, bool decode) const;
  // Adds `entry` (with its draft, if any) to the plan in flight, taken from the budget.
  void Schedule(Scheduled entry, StepBudget* budget);
  // Sets entry->draft (empty: none) for decoding `seq` in this step, leaving a token and a row of
  // the budget for each of the `decodes_left` decodes still to schedule (`seq`'s included), with
  // its blocks reserved (a draft never preempts) and, under a constraint, its masks; or
  // entry->probe, the first token of a draft found but not worth feeding, for DraftAcceptance.
  void DraftFor(Sequence* seq, int32_t decodes, int32_t decodes_left, const StepBudget& budget, Scheduled* entry);
  // Cuts entry->draft to what `constraint` allows (walking a copy of it through the draft) and
  // fills entry->draft_masks; false when nothing is left.
  bool ConstrainDraft(const OutputConstraint& constraint, Scheduled* entry) const;
  // Grows `seq`'s table for `n` more tokens, preempting the newest running sequences as
  // needed. False when `seq` itself was preempted (or failed).
  bool ReserveOrPreempt(Sequence* seq, int32_t n, StepBudget* budget);
  void Preempt(Sequence* seq);
  void Admit(StepBudget* budget);
  int32_t WatermarkBlocks() const;
  // Whether a running sequence is computing full block `block` of `seq`'s prompt (the same
  // chained hash), which `seq` can share once it is registered.
  bool BlockInFlight(const Sequence& seq, int32_t block) const;
  void RegisterComputedBlocks(Sequence& seq);
  // Hands the step's prompt scores of `seq` (computed from seq->num_computed) to the observer,
  // the ones not reported before.
  void ReportScores(Sequence* seq, std::span<const ScoredToken> scored);
  // Gathers reported scores of `seq` (prompt tokens from `first`) into whole blocks for the
  // score cache.
  void KeepBlockScores(Sequence* seq, int32_t first, std::span<const ScoredToken> scored);
  // The prompt block whose kept scores `seq` can take next: the block its next unreported token
  // starts, when that block is hashed (whole in the prompt) and a score cache exists; else -1.
  int32_t NextScoreBlock(const Sequence& seq) const;
  // Reports the scores the cache holds for `seq`'s next whole blocks, in order.
  void ReportCachedScores(Sequence* seq);
  // Whether a running sequence is scoring the block `seq` needs scores of next (the same chained
  // hash, as many alternatives or more), whose scores the cache will then hold.
  bool ScoresInFlight(const Sequence& seq) const;
  // Takes one sampled token; false when it finished the sequence (then gone).
  bool HandleSample(Sequence* seq, const SequenceResult& sampled);
  // Takes the samples of a drafting step up to the first draft the model did not generate,
  // counting each kept draft as computed; `kept` says how many. False when the sequence finished.
  bool KeepDrafts(Sequence* seq, const std::vector<int32_t>& draft, const SequenceResult& result, int32_t* kept);
  void Finish(Sequence* seq, FinishReason reason, Status status);
  SequencePlan MakeSequencePlan(const Scheduled& entry) const;
  Status CheckResult(const StepResult& result) const;

  const int index_;
  const ReplicaConfig config_;
  const std::unordered_set<int32_t> end_of_generation_;
  SequenceObserver& observer_;
  PromptScoreCache* const score_cache_;  // null: none
  ReplicaCapacity capacity_;
  cache::BlockManager blocks_;
  // Owned sequences by id (= age): the newest running sequence is running_.rbegin().
  std::map<RequestId, std::unique_ptr<Sequence>> running_;
  std::map<RequestId, std::unique_ptr<Sequence>> waiting_;
  std::vector<Scheduled> scheduled_;       // the plan in flight
  std::vector<uint64_t> released_;         // for the next plan's released_sequences
  uint64_t next_step_id_ = 1;
  int64_t prefill_tokens_total_ = 0;
  int64_t draft_tokens_total_ = 0;
  int64_t accepted_draft_tokens_total_ = 0;
};

}  // namespace bitfleet::coordinator

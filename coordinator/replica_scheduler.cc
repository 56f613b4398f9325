#include "coordinator/replica_scheduler.h"

#include <algorithm>
#include <optional>

#include "cache/block_table.h"
#include "coordinator/request_validation.h"
#include "core/logging.h"

namespace bitfleet::coordinator {
namespace {

bool RejectedPlan(const Status& status) {
  return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kResourceExhausted;
}

}  // namespace

ReplicaScheduler::ReplicaScheduler(int index, const ReplicaConfig& config, SequenceObserver& observer,
                                   PromptScoreCache* scores)
    : index_(index),
      config_(config),
      end_of_generation_(config.end_of_generation.begin(), config.end_of_generation.end()),
      observer_(observer),
      score_cache_(config.prefix_caching ? scores : nullptr),
      blocks_(0, config.block_size) {}

void ReplicaScheduler::Configure(const ReplicaCapacity& capacity) {
  capacity_ = capacity;
  blocks_ = cache::BlockManager(capacity.kv_blocks, config_.block_size);
  released_.clear();
}

void ReplicaScheduler::Enqueue(std::unique_ptr<Sequence> seq) {
  seq->replica = index_;
  const RequestId id = seq->id;
  waiting_.emplace(id, std::move(seq));
}

void ReplicaScheduler::Reap(Clock::time_point now) {
  std::vector<std::pair<Sequence*, FinishReason>> done;
  for (auto* queue : {&running_, &waiting_}) {
    for (auto& [id, seq] : *queue) {
      if (seq->cancel_reason != FinishReason::kNone) {
        // gRPC cancels a call when its deadline passes, and the API then cancels the request:
        // a cancel seen after the deadline is the deadline's (its status, reason and metrics).
        const bool expired = seq->cancel_reason == FinishReason::kCancelled && now >= seq->deadline;
        done.emplace_back(seq.get(), expired ? FinishReason::kDeadline : seq->cancel_reason);
      } else if (now >= seq->deadline) {
        done.emplace_back(seq.get(), FinishReason::kDeadline);
      }
    }
  }
  for (auto [seq, reason] : done) {
    Status status;
    if (reason == FinishReason::kCancelled) status = absl::CancelledError("request cancelled");
    if (reason == FinishReason::kDeadline) status = absl::DeadlineExceededError("request deadline exceeded");
    Finish(seq, reason, status);
  }
}

int32_t ReplicaScheduler::ChunkFor(const Sequence& seq, int32_t from, const StepBudget& budget) const {
  int32_t n = std::min(static_cast<int32_t>(seq.tokens.size()) - from, budget.tokens);
  if (config_.max_prefill_chunk > 0) n = std::min(n, config_.max_prefill_chunk);
  if (seq.scoring()) {
    // A scored chunk returns one logit row per token.
    const int32_t known = ScoredAlready(seq, from);
    n = known > 0 ? std::min(n, known) : std::min(n, budget.rows);
  }
  return n;
}

int32_t ReplicaScheduler::ScoredAlready(const Sequence& seq, int32_t from) const {
  const int32_t known = seq.prompt_scored - 1 - from;
  return seq.scoring() && known >= config_.block_size ? known : 0;
}

int32_t ReplicaScheduler::ScoredTokens(const Sequence& seq, int32_t n) const {
  // Row j of the chunk scores the token at num_computed + j + 1, a prompt token.
  if (!seq.scoring() || ScoredAlready(seq, seq.num_computed) > 0) return 0;
  return std::clamp(seq.prompt_len - 1 - seq.num_computed, 0, n);
}

ReplicaScheduler::Scheduled ReplicaScheduler::Entry(Sequence* seq, int32_t n, bool decode) const {
  return Scheduled{seq, n, decode, ScoredTokens(*seq, n), {}, {}, -1};
}

void ReplicaScheduler::Schedule(Scheduled entry, StepBudget* budget) {
  budget->tokens -= entry.tokens();
  budget->rows -= entry.rows();
  scheduled_.push_back(std::move(entry));
}

void ReplicaScheduler::DraftFor(Sequence* seq, int32_t decodes, int32_t decodes_left, const StepBudget& budget,
                                Scheduled* entry) {
  const DraftOptions& options = config_.draft;
  if (options.max_tokens <= 0 || decodes > options.max_batch) return;
  // A token's log probability and prompt scores are reported per position, for tokens the
  // request keeps: not for drafts.
  if (seq->sampling.logprobs || seq->scoring()) return;
  // Kept drafts and the sample after them are generated tokens: stay within max_tokens (and so
  // within the context the request was admitted for).
  const int32_t limit = std::min({options.max_tokens, capacity_.max_draft_tokens,
                                  seq->max_tokens - seq->generated() - 1, budget.tokens - decodes_left,
                                  budget.rows - decodes_left});
  std::vector<int32_t>& draft = entry->draft;
  seq->draft_index.Propose(seq->tokens, options, limit, &draft);
  if (draft.empty()) return;
  const int32_t first = draft[0];
  draft.resize(static_cast<size_t>(seq->drafts.Worth(static_cast<int32_t>(draft.size()), options.min_keep_chance)));
  if (draft.empty()) {
    entry->probe = first;  // not worth feeding now; whether the model generates it still counts
    return;
  }
  if (seq->constraint != nullptr && !ConstrainDraft(*seq->constraint, entry)) return;
  const int64_t positions = static_cast<int64_t>(seq->num_computed) + 1 + static_cast<int64_t>(draft.size());
  if (!blocks_.Grow(seq->id, positions).ok()) {  // all or nothing; the decode goes on without
    draft.clear();
    entry->draft_masks.clear();
  }
}

bool ReplicaScheduler::ConstrainDraft(const OutputConstraint& constraint, Scheduled* entry) const {
  std::vector<int32_t>& draft = entry->draft;
  std::unique_ptr<OutputConstraint> trial = constraint.Clone();
  size_t kept = 0;
  if (trial != nullptr) {
    // The draft up to its first token the constraint refuses, or after which nothing may follow
    // (the sample there must end the output) or the end of generation (whose Accept ends it).
    for (; kept < draft.size(); ++kept) {
      const int32_t token = draft[kept];
      if (end_of_generation_.contains(token) || !MaskHas(trial->AllowedTokens(), token) || !trial->Accept(token)) {
        break;
      }
      const TokenMask& next = trial->AllowedTokens();
      if (MaskEmpty(next)) break;
      entry->draft_masks.insert(entry->draft_masks.end(), next.begin(), next.end());
    }
  }
  draft.resize(kept);
  return kept > 0;
}

StepPlan ReplicaScheduler::BuildPlan() {
  StepPlan plan;
  scheduled_.clear();
  for (auto& [id, seq] : waiting_) seq->preempted_this_step = false;
  StepBudget budget{capacity_.max_step_tokens, std::max(capacity_.max_logit_rows, capacity_.max_step_sequences)};
  if (budget.tokens > 0 && budget.rows > 0) {
    // Decodes first (one token each keeps inter-token latency flat), then prefill chunks of
    // running sequences; both oldest first.
    std::vector<Sequence*> decodes;
    std::vector<Sequence*> prefills;
    for (auto& [id, seq] : running_) {
      (seq->pending() == 1 && seq->generated() > 0 ? decodes : prefills).push_back(seq.get());
    }
    int32_t decodes_left = static_cast<int32_t>(decodes.size());
    for (const std::vector<Sequence*>* group : {&decodes, &prefills}) {
      for (Sequence* seq : *group) {
        if (!running_.contains(seq->id)) continue;  // preempted earlier in this pass
        if (budget.tokens <= 0 || budget.rows <= 0 ||
            static_cast<int32_t>(scheduled_.size()) >= capacity_.max_step_sequences) {
          break;
        }
        const int32_t n = ChunkFor(*seq, seq->num_computed, budget);
        const bool decode = group == &decodes;
        if (!ReserveOrPreempt(seq, n, &budget)) continue;
        Scheduled entry = Entry(seq, n, decode);
        if (decode) DraftFor(seq, static_cast<int32_t>(decodes.size()), decodes_left--, budget, &entry);
        Schedule(std::move(entry), &budget);
      }
    }
    Admit(&budget);
  }
  if (scheduled_.empty()) return plan;  // keeps released_ for the next real plan
  plan.step_id = next_step_id_++;
  for (const Scheduled& entry : scheduled_) plan.sequences.push_back(MakeSequencePlan(entry));
  plan.released_sequences = std::move(released_);
  released_.clear();
  return plan;
}

bool ReplicaScheduler::ReserveOrPreempt(Sequence* seq, int32_t n, StepBudget* budget) {
  while (true) {
    const Status grown = blocks_.Grow(seq->id, static_cast<int64_t>(seq->num_computed) + n);
    if (grown.ok()) return true;
    if (grown.code() != absl::StatusCode::kResourceExhausted) {
      Finish(seq, FinishReason::kError, grown);
      return false;
    }
    Sequence* victim = running_.rbegin()->second.get();
    if (victim == seq) {
      Preempt(seq);
      return false;
    }
    auto it = std::find_if(scheduled_.begin(), scheduled_.end(), [&](const Scheduled& s) { return s.seq == victim; });
    if (it != scheduled_.end()) {
      budget->tokens += it->tokens();
      budget->rows += it->rows();
      scheduled_.erase(it);
    }
    Preempt(victim);
  }
}

void ReplicaScheduler::Preempt(Sequence* seq) {
  // Its full computed blocks are registered already (ApplyResult), so they stay cached and the
  // recompute finds them unless they get evicted first.
  blocks_.Free(seq->id).IgnoreError();  // only this sequence's own references
  seq->num_computed = 0;
  seq->preempted_this_step = true;
  ++seq->usage.preemptions;
  released_.push_back(seq->id);
  auto node = running_.extract(seq->id);
  observer_.OnPreempted(*seq);
  waiting_.insert(std::move(node));
}

int32_t ReplicaScheduler::WatermarkBlocks() const {
  // While others run, admission leaves ~1% of the pool for their decode growth, so a fresh
  // admission is not preempted again at the very next step.
  if (running_.empty()) return 0;
  return std::max<int32_t>(1, blocks_.num_blocks() / 100);
}

void ReplicaScheduler::Admit(StepBudget* budget) {
  const int32_t bs = config_.block_size;
  auto next = waiting_.begin();
  while (next != waiting_.end() && budget->tokens > 0 && budget->rows > 0 &&
         static_cast<int32_t>(scheduled_.size()) < capacity_.max_step_sequences &&
         num_running() < capacity_.max_step_sequences) {
    Sequence* seq = next->second.get();
    // Strict submission order: a sequence that cannot start now for want of blocks blocks the
    // ones behind it, so a large request is never starved by a stream of small ones.
    if (seq->preempted_this_step) break;
    int32_t max_cached_blocks = 0;
    if (config_.prefix_caching) {
      // At least the last token is always computed: its logits are what the step samples from.
      max_cached_blocks = (static_cast<int32_t>(seq->tokens.size()) - 1) / bs;
      if (static_cast<int32_t>(seq->block_hashes.size()) < max_cached_blocks) {
        const Status hashed = cache::ExtendBlockHashes(seq->hash_scope, seq->tokens, bs, &seq->block_hashes);
        if (!hashed.ok()) {
          ++next;  // Finish takes it out of waiting_
          Finish(seq, FinishReason::kError, hashed);
          continue;
        }
      }
      if (seq->scoring()) {
        ReportCachedScores(seq);
        // Another request is scoring the block this one needs scores of next: its scores (and
        // KV) will be cached within a few steps (the burst rule below, for scores).
        if (ScoresInFlight(*seq)) {
          ++next;
          continue;
        }
      }
      // Positions whose logits score a prompt token must be computed, not found.
      if (seq->scoring()) max_cached_blocks = std::min(max_cached_blocks, (seq->prompt_scored - 1) / bs);
    }
    const cache::CachedPrefix prefix = blocks_.PlanCachedPrefix(seq->block_hashes, max_cached_blocks);
    // A burst of requests on one long prompt (agents sharing a system prompt): the first one
    // computes it, the others wait the few steps until its blocks are registered, then share
    // them, instead of all computing the same prefix at once. Sequences behind a waiting one go
    // ahead meanwhile: its wait ends within a few steps, and it comes first again at every
    // admission.
    if (prefix.blocks < max_cached_blocks && BlockInFlight(*seq, prefix.blocks)) {
      ++next;
      continue;
    }
    const int32_t cached_tokens = prefix.blocks * bs;
    const int32_t n = ChunkFor(*seq, cached_tokens, *budget);
    const int64_t needed = cache::BlocksForTokens(cached_tokens + n, bs) - prefix.blocks;
    if (needed > blocks_.num_allocatable() - prefix.revived - WatermarkBlocks()) break;

    const bool first = !seq->admitted_once;
    auto node = waiting_.extract(next++);
    StatusOr<int32_t> attached = blocks_.AttachCachedPrefix(seq->id, seq->block_hashes, max_cached_blocks);
    Status status = attached.ok() ? blocks_.Grow(seq->id, cached_tokens + n) : attached.status();
    running_.insert(std::move(node));
    if (!status.ok()) {  // cannot happen after the checks above; never leave blocks behind
      Finish(seq, FinishReason::kError, status);
      continue;
    }
    seq->num_computed = cached_tokens;
    seq->admitted_once = true;
    if (first) seq->usage.cached_prompt_tokens = std::min(cached_tokens, seq->prompt_len);
    observer_.OnAdmitted(*seq, first, cached_tokens);
    Schedule(Entry(seq, n, false), budget);
  }
}

bool ReplicaScheduler::BlockInFlight(const Sequence& seq, int32_t block) const {
  const cache::BlockHash& hash = seq.block_hashes[block];
  const int32_t end = (block + 1) * config_.block_size;
  for (const auto& [id, other] : running_) {
    if (other->num_computed < end && static_cast<int32_t>(other->block_hashes.size()) > block &&
        other->block_hashes[block] == hash) {
      return true;
    }
  }
  return false;
}

SequencePlan ReplicaScheduler::MakeSequencePlan(const Scheduled& entry) const {
  const Sequence& seq = *entry.seq;
  SequencePlan plan;
  plan.sequence_id = seq.id;
  plan.start_pos = seq.num_computed;
  plan.tokens.assign(seq.tokens.begin() + seq.num_computed, seq.tokens.begin() + seq.num_computed + entry.n_tokens);
  plan.tokens.insert(plan.tokens.end(), entry.draft.begin(), entry.draft.end());
  plan.draft_tokens = static_cast<int32_t>(entry.draft.size());
  std::span<const int32_t> table = blocks_.Table(seq.id);
  plan.block_table.assign(table.begin(), table.end());
  plan.sample = seq.num_computed + entry.n_tokens == static_cast<int32_t>(seq.tokens.size());
  plan.sampling = seq.sampling;
  plan.sample_index = static_cast<uint64_t>(seq.generated());
  if (plan.sample && PenaltiesActive(seq.sampling)) {
    const int32_t before = seq.num_computed;  // tokens before this step's
    const int32_t window = seq.sampling.penalty_last_n < 0 ? before : std::min(before, seq.sampling.penalty_last_n);
    plan.history.assign(seq.tokens.begin() + (before - window), seq.tokens.begin() + before);
  }
  if (plan.sample && seq.constraint != nullptr) {
    plan.allowed_tokens = seq.constraint->AllowedTokens();
    // A drafting sequence's later samples: the mask after each draft, in order.
    plan.allowed_tokens.insert(plan.allowed_tokens.end(), entry.draft_masks.begin(), entry.draft_masks.end());
  }
  const auto scored = seq.tokens.begin() + seq.num_computed + 1;
  plan.score_tokens.assign(scored, scored + entry.n_scored);
  return plan;
}

Status ReplicaScheduler::CheckResult(const StepResult& result) const {
  if (result.sequences.size() != scheduled_.size()) {
    return absl::InternalError(absl::StrCat("replica ", index_, " answered ", result.sequences.size(),
                                            " sequences for a plan of ", scheduled_.size()));
  }
  for (size_t i = 0; i < scheduled_.size(); ++i) {
    const SequenceResult& r = result.sequences[i];
    const Sequence& seq = *scheduled_[i].seq;
    if (r.sequence_id != seq.id) {
      return absl::InternalError(
          absl::StrCat("replica ", index_, " answered sequence ", r.sequence_id, " in the place of ", seq.id));
    }
    if (r.scored.size() != static_cast<size_t>(scheduled_[i].n_scored)) {
      return absl::InternalError(absl::StrCat("replica ", index_, " scored ", r.scored.size(), " tokens of sequence ",
                                              seq.id, " for a plan of ", scheduled_[i].n_scored));
    }
    const bool sampled = seq.num_computed + scheduled_[i].n_tokens == static_cast<int32_t>(seq.tokens.size());
    if (r.draft_samples.size() != scheduled_[i].draft.size()) {
      return absl::InternalError(absl::StrCat("replica ", index_, " sampled after ", r.draft_samples.size(),
                                              " drafts of sequence ", seq.id, " for a plan of ",
                                              scheduled_[i].draft.size()));
    }
    for (int32_t token : r.draft_samples) {
      if (token < 0 || token >= config_.n_vocab) {
        return absl::InternalError(absl::StrCat("replica ", index_, " sampled token ", token,
                                                " after a draft of sequence ", seq.id, ", outside the vocabulary of ",
                                                config_.n_vocab));
      }
    }
    if (sampled && (r.token < 0 || r.token >= config_.n_vocab)) {
      return absl::InternalError(absl::StrCat("replica ", index_, " sampled token ", r.token, " for sequence ", seq.id,
                                              ", outside the vocabulary of ", config_.n_vocab));
    }
  }
  return absl::OkStatus();
}

void ReplicaScheduler::ApplyResult(const StatusOr<StepResult>& result) {
  Status status = result.ok() ? CheckResult(*result) : result.status();
  if (!status.ok()) {
    std::vector<Scheduled> plan = std::move(scheduled_);
    scheduled_.clear();
    if (RejectedPlan(status)) {
      Logger("scheduler")->error("replica {} rejected a plan of {} sequences: {}", index_, plan.size(),
                                 std::string(status.message()));
      for (const Scheduled& entry : plan) Finish(entry.seq, FinishReason::kError, status);
    } else {
      Logger("scheduler")->error("replica {} failed: {}", index_, std::string(status.message()));
      FailAll(absl::UnavailableError(absl::StrCat("replica ", index_, " failed: ", std::string(status.message()))));
    }
    return;
  }
  std::vector<Scheduled> plan = std::move(scheduled_);
  scheduled_.clear();
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence* seq = plan[i].seq;
    const bool sampled = seq->num_computed + plan[i].n_tokens == static_cast<int32_t>(seq->tokens.size());
    if (plan[i].n_scored > 0) ReportScores(seq, result->sequences[i].scored);
    seq->num_computed += plan[i].n_tokens;
    if (!plan[i].decode) {
      seq->usage.prefilled_tokens += plan[i].n_tokens;
      prefill_tokens_total_ += plan[i].n_tokens;
    }
    if (!sampled) {
      RegisterComputedBlocks(*seq);
      continue;
    }
    const SequenceResult& r = result->sequences[i];
    if (plan[i].probe >= 0) seq->drafts.Record(1, r.token == plan[i].probe ? 1 : 0);
    int32_t kept = 0;
    if (!KeepDrafts(seq, plan[i].draft, r, &kept)) continue;  // finished
    RegisterComputedBlocks(*seq);
    // The sample after the last kept draft (a ternary would copy `r`, logprobs and all).
    if (kept == 0) {
      HandleSample(seq, r);
    } else {
      HandleSample(seq, SequenceResult(r.sequence_id, r.draft_samples[static_cast<size_t>(kept - 1)]));
    }
  }
}

bool ReplicaScheduler::KeepDrafts(Sequence* seq, const std::vector<int32_t>& draft, const SequenceResult& result,
                                  int32_t* kept) {
  // Draft j was fed where the sample before it goes: when they are equal, the step computed
  // exactly what generating that token would have, and the sample after draft j is the next
  // token. The first difference ends it; what was computed after it is dropped (its KV lies
  // past num_computed and gets overwritten).
  auto sample_before = [&](size_t j) { return j == 0 ? result.token : result.draft_samples[j - 1]; };
  size_t right = 0;
  while (right < draft.size() && sample_before(right) == draft[right]) ++right;
  draft_tokens_total_ += static_cast<int64_t>(draft.size());
  accepted_draft_tokens_total_ += static_cast<int64_t>(right);
  seq->drafts.Record(static_cast<int32_t>(right < draft.size() ? right + 1 : right), static_cast<int32_t>(right));
  for (size_t j = 0; j < right; ++j) {
    const bool going =
        j == 0 ? HandleSample(seq, result) : HandleSample(seq, SequenceResult(result.sequence_id, sample_before(j)));
    if (!going) return false;
    ++seq->num_computed;
    ++*kept;
  }
  return true;
}

void ReplicaScheduler::RegisterComputedBlocks(Sequence& seq) {
  if (!config_.prefix_caching) return;
  const int32_t bs = config_.block_size;
  const size_t full = static_cast<size_t>(seq.num_computed / bs);
  if (seq.block_hashes.size() < full) {
    std::span<const int32_t> computed(seq.tokens.data(), full * bs);
    const Status hashed = cache::ExtendBlockHashes(seq.hash_scope, computed, bs, &seq.block_hashes);
    if (!hashed.ok()) {
      Logger("scheduler")->warn("sequence {}: block hashing failed, its blocks stay private: {}", seq.id,
                                std::string(hashed.message()));
      return;
    }
  }
  const Status registered =
      blocks_.RegisterFullBlocks(seq.id, std::span<const cache::BlockHash>(seq.block_hashes).first(full));
  if (!registered.ok()) {
    Logger("scheduler")->warn("sequence {}: block registration failed: {}", seq.id, std::string(registered.message()));
  }
}

void ReplicaScheduler::ReportScores(Sequence* seq, std::span<const ScoredToken> scored) {
  // scored[j] is prompt token num_computed + 1 + j; a recompute after a preemption may cover
  // tokens reported already.
  const int32_t first = seq->num_computed + 1;
  const int32_t skip = std::max(0, seq->prompt_scored - first);
  if (skip >= static_cast<int32_t>(scored.size())) return;
  const std::span<const ScoredToken> fresh = scored.subspan(static_cast<size_t>(skip));
  observer_.OnPromptLogprobs(*seq, first + skip, fresh, /*from_cache=*/false);
  KeepBlockScores(seq, first + skip, fresh);
  seq->prompt_scored = first + static_cast<int32_t>(scored.size());
  if (!seq->scoring()) seq->block_scores = {};  // a partial last block is never kept
}

void ReplicaScheduler::KeepBlockScores(Sequence* seq, int32_t first, std::span<const ScoredToken> scored) {
  if (score_cache_ == nullptr) return;
  const int32_t bs = config_.block_size;
  for (size_t i = 0; i < scored.size(); ++i) {
    const int32_t token = first + static_cast<int32_t>(i);
    seq->block_scores.push_back(scored[i]);
    if ((token + 1) % bs != 0) continue;  // not the last token of its block
    const int32_t block = token / bs;
    // Reports start at a block's start (token 1 for block 0), so this holds the whole block.
    const size_t whole = static_cast<size_t>(block == 0 ? bs - 1 : bs);
    if (seq->block_scores.size() == whole && static_cast<size_t>(block) < seq->block_hashes.size()) {
      score_cache_->Insert(seq->block_hashes[static_cast<size_t>(block)], seq->sampling.top_logprobs,
                           std::move(seq->block_scores));
    }
    seq->block_scores.clear();
  }
}

int32_t ReplicaScheduler::NextScoreBlock(const Sequence& seq) const {
  if (score_cache_ == nullptr || !seq.scoring()) return -1;
  const int32_t block = seq.prompt_scored / config_.block_size;
  // Whole blocks only: a block's scores are kept whole, and a partly reported block is finished
  // by computing it.
  if (seq.prompt_scored != std::max(1, block * config_.block_size)) return -1;
  return static_cast<size_t>(block) < seq.block_hashes.size() ? block : -1;
}

void ReplicaScheduler::ReportCachedScores(Sequence* seq) {
  for (int32_t block = NextScoreBlock(*seq); block >= 0; block = NextScoreBlock(*seq)) {
    std::optional<std::vector<ScoredToken>> scores =
        score_cache_->Find(seq->block_hashes[static_cast<size_t>(block)], seq->sampling.top_logprobs);
    if (!scores) return;
    observer_.OnPromptLogprobs(*seq, seq->prompt_scored, *scores, /*from_cache=*/true);
    seq->prompt_scored = (block + 1) * config_.block_size;
  }
}

bool ReplicaScheduler::ScoresInFlight(const Sequence& seq) const {
  const int32_t block = NextScoreBlock(seq);
  if (block < 0) return false;
  const int32_t bs = config_.block_size;
  const cache::BlockHash& hash = seq.block_hashes[static_cast<size_t>(block)];
  for (const auto& [id, other] : running_) {
    const std::vector<cache::BlockHash>& chain = other->block_hashes;
    if (other->scoring() && other->prompt_scored < (block + 1) * bs &&
        other->sampling.top_logprobs >= seq.sampling.top_logprobs && chain.size() > static_cast<size_t>(block) &&
        chain[static_cast<size_t>(block)] == hash) {
      return true;
    }
  }
  return false;
}

bool ReplicaScheduler::HandleSample(Sequence* seq, const SequenceResult& sampled) {
  const int32_t token = sampled.token;
  if (seq->constraint != nullptr && !seq->constraint->Accept(token)) {
    Finish(seq, FinishReason::kError,
           absl::InternalError(absl::StrCat("replica ", index_, " sampled token ", token,
                                            ", which the request's response format does not allow")));
    return false;
  }
  if (!seq->ignore_eos && end_of_generation_.contains(token)) {
    Finish(seq, FinishReason::kStop, absl::OkStatus());
    return false;
  }
  seq->tokens.push_back(token);
  observer_.OnToken(*seq, sampled);
  if (seq->generated() >= seq->max_tokens) {
    Finish(seq, FinishReason::kLength, absl::OkStatus());
    return false;
  }
  if (seq->constraint != nullptr && MaskEmpty(seq->constraint->AllowedTokens())) {
    // No token may follow: a whole output ends as if the model had stopped; otherwise the
    // vocabulary cannot spell what the format needs next.
    if (seq->constraint->Complete()) {
      Finish(seq, FinishReason::kStop, absl::OkStatus());
    } else {
      Finish(seq, FinishReason::kError,
             absl::FailedPreconditionError("no token of the vocabulary continues the response format here"));
    }
    return false;
  }
  return true;
}

void ReplicaScheduler::Finish(Sequence* seq, FinishReason reason, Status status) {
  const RequestId id = seq->id;
  blocks_.Free(id).IgnoreError();  // only this sequence's own references
  auto node = running_.extract(id);
  if (!node) {
    node = waiting_.extract(id);
  } else {
    released_.push_back(id);
  }
  if (!node) return;
  observer_.OnFinished(std::move(node.mapped()), reason, std::move(status));
}

void ReplicaScheduler::FinishAll(FinishReason reason, const Status& status) {
  std::vector<Sequence*> all;
  for (auto* queue : {&running_, &waiting_}) {
    for (auto& [id, seq] : *queue) all.push_back(seq.get());
  }
  scheduled_.clear();
  for (Sequence* seq : all) Finish(seq, reason, status);
}

void ReplicaScheduler::FailAll(const Status& status) {
  FinishAll(FinishReason::kError, status);
  blocks_.Reset();
  released_.clear();
}

int64_t ReplicaScheduler::PendingPrefillTokens() const {
  int64_t total = 0;
  for (const auto* queue : {&running_, &waiting_}) {
    for (const auto& [id, seq] : *queue) {
      if (seq->pending() > 1 || seq->generated() == 0) total += seq->pending();
    }
  }
  return total;
}

Status ReplicaScheduler::CheckInvariants() const {
  BF_RETURN_IF_ERROR(blocks_.CheckInvariants());
  for (const auto& [id, seq] : running_) {
    const int64_t capacity = static_cast<int64_t>(blocks_.Table(id).size()) * config_.block_size;
    if (!blocks_.HasSequence(id) || capacity < seq->num_computed) {
      return absl::InternalError(absl::StrCat("running sequence ", id, " has ", seq->num_computed,
                                              " computed tokens but a table of ", capacity, " positions"));
    }
    if (seq->pending() < 1) {
      return absl::InternalError(absl::StrCat("running sequence ", id, " has nothing to feed"));
    }
  }
  for (const auto& [id, seq] : waiting_) {
    if (blocks_.HasSequence(id)) return absl::InternalError(absl::StrCat("waiting sequence ", id, " holds blocks"));
  }
  return absl::OkStatus();
}

}  // namespace bitfleet::coordinator

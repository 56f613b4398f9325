#include "worker/step_executor.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "core/logging.h"

namespace bitfleet::worker {
namespace {

static_assert(kMaxTopLogprobs == coordinator::kMaxTopLogprobs, "one bound for the API and the worker");

// More streams than this and the map is cleared (streams are rebuildable; released_sequences
// normally keeps it small).
constexpr size_t kMaxStreams = 16384;

}  // namespace

SamplingParams ToSamplingParams(const coordinator::StepSampling& s) {
  SamplingParams p;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.min_p = s.min_p;
  p.repeat_penalty = s.repeat_penalty;
  p.presence_penalty = s.presence_penalty;
  p.frequency_penalty = s.frequency_penalty;
  p.penalty_last_n = s.penalty_last_n;
  p.seed = s.seed;
  p.logit_bias.reserve(s.logit_bias.size());
  for (const coordinator::TokenBias& b : s.logit_bias) p.logit_bias.push_back({b.token, b.bias});
  return p;
}

StepExecutor::StepExecutor(StepRunner& runner) : runner_(runner), sampler_(runner.n_vocab()), log_(Logger("worker")) {
  if (!runner.logits_whole()) {
    const sharding::Range slice = runner.vocab_slice();
    distributed_ = std::make_unique<DistributedSampler>(runner.communicator(), runner.n_vocab(),
                                                        static_cast<int32_t>(slice.begin),
                                                        static_cast<int32_t>(slice.size()));
  }
}

Status StepExecutor::Validate(const coordinator::StepPlan& plan) const {
  const uint64_t max_context = static_cast<uint64_t>(runner_.options().max_context);
  for (const coordinator::SequencePlan& seq : plan.sequences) {
    if (seq.sample || !seq.score_tokens.empty()) {
      if (seq.sampling.top_logprobs < 0 || seq.sampling.top_logprobs > kMaxTopLogprobs) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.sequence_id, ": top_logprobs ",
                                                       seq.sampling.top_logprobs, " outside [0, ", kMaxTopLogprobs,
                                                       "]"));
      }
    }
    if (seq.score_tokens.size() > seq.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.sequence_id, ": ", seq.score_tokens.size(),
                                                     " tokens to score in a chunk of ", seq.tokens.size()));
    }
    for (int32_t token : seq.score_tokens) {
      if (token < 0 || token >= runner_.n_vocab()) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.sequence_id, ": token to score ", token,
                                                       " outside the vocabulary of ", runner_.n_vocab()));
      }
    }
    if (seq.draft_tokens < 0 || seq.draft_tokens > coordinator::kMaxDraftTokens ||
        static_cast<size_t>(seq.draft_tokens) >= std::max<size_t>(seq.tokens.size(), 1)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.sequence_id, ": ", seq.draft_tokens,
                                                     " draft tokens in a chunk of ", seq.tokens.size()));
    }
    if (seq.draft_tokens > 0 && (!seq.sample || !seq.score_tokens.empty() || seq.sampling.logprobs)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", seq.sequence_id, ": draft tokens need a sampled step without scores or logprobs"));
    }
    const size_t mask_words = (static_cast<size_t>(runner_.n_vocab()) + 63) / 64;
    if (seq.draft_tokens > 0 && !seq.allowed_tokens.empty() &&
        seq.allowed_tokens.size() != mask_words * static_cast<size_t>(seq.draft_tokens + 1)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.sequence_id, ": allowed_tokens has ",
                                                     seq.allowed_tokens.size(), " words for ", seq.draft_tokens + 1,
                                                     " samples of ", mask_words));
    }
    if (!seq.sample) continue;
    SamplingParams params = ToSamplingParams(seq.sampling);
    for (int32_t j = 0; j <= seq.draft_tokens; ++j) {
      params.allowed_tokens = RowMask(seq, j);
      const Status valid = ValidateSamplingParams(params, runner_.n_vocab());
      if (!valid.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", seq.sequence_id, ": ", std::string(valid.message())));
      }
    }
    if (seq.sample_index + static_cast<uint64_t>(seq.draft_tokens) > max_context) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.sequence_id, ": sample_index ",
                                                     seq.sample_index, " beyond the context of ", max_context));
    }
  }
  return absl::OkStatus();
}

std::span<const uint64_t> StepExecutor::RowMask(const coordinator::SequencePlan& seq, int32_t row) const {
  if (seq.draft_tokens == 0 || seq.allowed_tokens.empty()) return seq.allowed_tokens;
  const size_t words = seq.allowed_tokens.size() / static_cast<size_t>(seq.draft_tokens + 1);
  return std::span<const uint64_t>(seq.allowed_tokens).subspan(static_cast<size_t>(row) * words, words);
}

Rng& StepExecutor::RngFor(const coordinator::SequencePlan& seq) {
  auto [it, inserted] = rngs_.try_emplace(seq.sequence_id);
  SequenceRng& stream = it->second;
  if (inserted || stream.seed != seq.sampling.seed || stream.next_index != seq.sample_index) {
    // Every earlier non-greedy sample drew exactly one value: skip that many.
    stream.seed = seq.sampling.seed;
    stream.rng.Seed(seq.sampling.seed);
    for (uint64_t i = 0; i < seq.sample_index; ++i) stream.rng.Next();
    stream.next_index = seq.sample_index;
  }
  ++stream.next_index;  // positioned for the sample after this one
  return stream.rng;
}

StatusOr<coordinator::StepResult> StepExecutor::Execute(const coordinator::StepPlan& plan) {
  BF_RETURN_IF_ERROR(Validate(plan));
  for (uint64_t id : plan.released_sequences) rngs_.erase(id);
  // Here, not in RngFor: rows of this step hold references into the map.
  if (rngs_.size() >= kMaxStreams) rngs_.clear();

  batch_.clear();
  for (const coordinator::SequencePlan& seq : plan.sequences) {
    SequenceStep step;
    step.tokens = seq.tokens;
    step.start_pos = seq.start_pos;
    step.block_table = seq.block_table;
    // Row j scores score_tokens[j]; a drafting sequence samples its last draft_tokens + 1 rows.
    step.all_logits = !seq.score_tokens.empty() || seq.draft_tokens > 0;
    batch_.push_back(step);
  }
  using Clock = std::chrono::steady_clock;
  const Clock::time_point begin = Clock::now();
  BF_ASSIGN_OR_RETURN(StepLogits logits, runner_.Step(batch_));
  ++steps_executed_;
  int64_t step_tokens = 0;
  int64_t end_pos = 0;
  for (const coordinator::SequencePlan& seq : plan.sequences) {
    step_tokens += static_cast<int64_t>(seq.tokens.size());
    end_pos = std::max<int64_t>(end_pos, seq.start_pos + static_cast<int64_t>(seq.tokens.size()));
  }
  tokens_executed_ += step_tokens;

  const Clock::time_point forward_end = Clock::now();
  coordinator::StepResult result;
  result.step_id = plan.step_id;
  for (const coordinator::SequencePlan& seq : plan.sequences) result.sequences.push_back({seq.sequence_id, -1});
  BF_RETURN_IF_ERROR(SampleAll(plan, logits, &result));
  std::vector<TokenLogprobs> logprobs;
  std::vector<LogprobRowOf> logprob_rows;
  BF_RETURN_IF_ERROR(LogprobsAll(plan, logits, result, &logprobs, &logprob_rows));
  // Per-step timings at debug level (where a request's latency goes: docs/perf.md).
  if (log_->should_log(spdlog::level::debug)) {
    const auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
    log_->debug("step {}: {} sequences, {} tokens, positions up to {}: model {:.3f} ms, sampling {:.3f} ms",
                plan.step_id, plan.sequences.size(), step_tokens, end_pos, ms(forward_end - begin),
                ms(Clock::now() - forward_end));
  }
  for (size_t r = 0; r < logprob_rows.size(); ++r) {
    coordinator::SequenceResult& seq = result.sequences[logprob_rows[r].sequence];
    std::vector<coordinator::TokenLogprob>* top = nullptr;
    if (logprob_rows[r].scored < 0) {
      seq.has_logprobs = true;
      seq.logprob = logprobs[r].logprob;
      top = &seq.top_logprobs;
    } else {
      // Rows come in score_tokens order (LogprobsAll).
      seq.scored.push_back({logprobs[r].logprob, {}});
      top = &seq.scored.back().top_logprobs;
    }
    for (const TopLogprob& t : logprobs[r].top) top->push_back({t.token, t.logprob});
  }
  return result;
}

Status StepExecutor::LogprobsAll(const coordinator::StepPlan& plan, const StepLogits& logits,
                                 const coordinator::StepResult& sampled, std::vector<TokenLogprobs>* out,
                                 std::vector<LogprobRowOf>* rows_of) {
  std::vector<ShardedLogprobRow> rows;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const coordinator::SequencePlan& seq = plan.sequences[i];
    const int seq_index = static_cast<int>(i);
    for (size_t j = 0; j < seq.score_tokens.size(); ++j) {
      rows.push_back({logits.Row(seq_index, static_cast<int>(j)), seq.score_tokens[j], seq.sampling.top_logprobs});
      rows_of->push_back({i, static_cast<int32_t>(j)});
    }
    if (!seq.sample || !seq.sampling.logprobs) continue;
    rows.push_back({logits.Last(seq_index), sampled.sequences[i].token, seq.sampling.top_logprobs});
    rows_of->push_back({i, -1});
  }
  // Every rank runs the same plan, so all take the collective or none does.
  if (rows.empty()) return absl::OkStatus();
  // Rows in parallel, on a pool made at the first step with several: a CPU runner's thread
  // count (its cores, idle between steps); a CUDA runner's host cores do nothing else, so up to 8.
  if (logprob_pool_ == nullptr && rows.size() > 1) {
    const RunnerOptions& options = runner_.options();
    const int threads = options.device == RunnerDevice::kCuda
                            ? std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 8)
                            : options.threads;
    if (threads > 1) logprob_pool_ = std::make_unique<ThreadPool>(threads);
  }
  if (distributed_ == nullptr) {
    WholeRowLogprobs(rows, out, logprob_pool_.get());
    return absl::OkStatus();
  }
  return ShardedLogprobs(runner_.communicator(), static_cast<int32_t>(runner_.vocab_slice().begin), rows, out,
                         logprob_pool_.get());
}

Status StepExecutor::SampleAll(const coordinator::StepPlan& plan, const StepLogits& logits,
                               coordinator::StepResult* result) {
  // One sample row per sampled sequence, plus one per draft token: row j of a sequence with d
  // drafts reads the logits after token n - d - 1 + j (n tokens fed), with the penalty history
  // through that token and the stream draw sample_index + j.
  struct SampleRow {
    size_t sequence;  // plan index
    int32_t draft;    // 0: the sequence's token; j > 0: draft_samples[j - 1]
  };
  std::vector<SampleRow> sample_rows;
  size_t n_drafts = 0;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const coordinator::SequencePlan& seq = plan.sequences[i];
    if (!seq.sample) continue;
    for (int32_t j = 0; j <= seq.draft_tokens; ++j) sample_rows.push_back({i, j});
    n_drafts += static_cast<size_t>(seq.draft_tokens);
    result->sequences[i].draft_samples.assign(static_cast<size_t>(seq.draft_tokens), -1);
  }
  if (histories_.size() < sample_rows.size()) histories_.resize(sample_rows.size());
  params_.clear();
  params_.reserve(sample_rows.size());  // rows point into it
  draft_rngs_.clear();
  draft_rngs_.reserve(n_drafts);        // and into this
  std::vector<Rng*> rngs(sample_rows.size(), &unused_rng_);
  for (size_t r = 0; r < sample_rows.size(); ++r) {
    const coordinator::SequencePlan& seq = plan.sequences[sample_rows[r].sequence];
    const int32_t j = sample_rows[r].draft;
    const size_t fed = seq.tokens.size() - static_cast<size_t>(seq.draft_tokens - j);
    std::vector<int32_t>& history = histories_[r];
    history.assign(seq.history.begin(), seq.history.end());
    history.insert(history.end(), seq.tokens.begin(), seq.tokens.begin() + static_cast<std::ptrdiff_t>(fed));
    if (j == 0) {
      params_.push_back(ToSamplingParams(seq.sampling));
    } else {
      params_.push_back(params_.back());  // rows of one sequence are adjacent
    }
    params_.back().allowed_tokens = RowMask(seq, j);  // the plan outlives this call
    if (params_.back().greedy()) continue;
    if (j == 0) {
      rngs[r] = &RngFor(seq);
    } else {
      // The draw after the previous row's, taken before any row draws.
      draft_rngs_.push_back(*rngs[r - 1]);
      draft_rngs_.back().Next();
      rngs[r] = &draft_rngs_.back();
    }
  }
  auto store = [&](size_t r, int32_t token) {
    coordinator::SequenceResult& out = result->sequences[sample_rows[r].sequence];
    const int32_t j = sample_rows[r].draft;
    (j == 0 ? out.token : out.draft_samples[static_cast<size_t>(j - 1)]) = token;
  };
  auto row_logits = [&](size_t r) {
    const int i = static_cast<int>(sample_rows[r].sequence);
    const int32_t drafts = plan.sequences[sample_rows[r].sequence].draft_tokens;
    return logits.Row(i, logits.rows(i) - 1 - drafts + sample_rows[r].draft);
  };
  if (distributed_ == nullptr) {
    for (size_t r = 0; r < sample_rows.size(); ++r) {
      store(r, sampler_.Sample(row_logits(r), histories_[r], params_[r], *rngs[r]));
    }
    return absl::OkStatus();
  }
  if (sample_rows.empty()) return absl::OkStatus();
  std::vector<ShardedLogitsRow> rows;
  rows.reserve(sample_rows.size());
  for (size_t r = 0; r < sample_rows.size(); ++r) rows.push_back({row_logits(r), histories_[r], &params_[r], rngs[r]});
  std::vector<int32_t> sampled(rows.size(), -1);
  BF_RETURN_IF_ERROR(distributed_->SampleBatch(rows, sampled));
  for (size_t r = 0; r < sample_rows.size(); ++r) store(r, sampled[r]);
  return absl::OkStatus();
}

}  // namespace bitfleet::worker

#include "tests/unit/coordinator/fake_executor.h"

#include "absl/strings/str_cat.h"
#include "coordinator/output_constraint.h"

namespace bitfleet::coordinator::testing {

namespace {

uint64_t Fnv1a(std::span<const int32_t> context) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : context) {
    h ^= static_cast<uint32_t>(t);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

float FakeLogprob(int32_t token, int rank) { return -0.125f * static_cast<float>(rank) - 0.001f * (token % 50); }

float FakePromptLogprob(std::span<const int32_t> context, int32_t token) {
  return -0.0625f * static_cast<float>(Fnv1a(context) % 64) - 0.001f * static_cast<float>(token % 50);
}

NextTokenFn HashNextToken(int32_t n_vocab) {
  return [n_vocab](std::span<const int32_t> context) {
    return static_cast<int32_t>(3 + Fnv1a(context) % static_cast<uint64_t>(n_vocab - 3));
  };
}

std::vector<int32_t> ExpectedTokens(const NextTokenFn& next, std::vector<int32_t> prompt, int max_tokens,
                                    const std::unordered_set<int32_t>& eos) {
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < max_tokens) {
    const int32_t token = next(prompt);
    if (eos.contains(token)) break;
    out.push_back(token);
    prompt.push_back(token);
  }
  return out;
}

FakeExecutor::FakeExecutor(const FakeExecutorOptions& options, NextTokenFn next)
    : options_(options),
      next_(next ? std::move(next) : HashNextToken(options.n_vocab)),
      kv_(static_cast<size_t>(options.kv_blocks) * options.block_size, -1) {}

bool FakeExecutor::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return healthy_;
}

uint64_t FakeExecutor::incarnation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return incarnation_;
}

void FakeExecutor::Restart() {
  std::lock_guard<std::mutex> lock(mu_);
  std::fill(kv_.begin(), kv_.end(), -1);
  ++incarnation_;
}

void FakeExecutor::set_healthy(bool healthy) {
  std::lock_guard<std::mutex> lock(mu_);
  healthy_ = healthy;
}

void FakeExecutor::FailNextSteps(int n, Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_left_ = n;
  failure_ = std::move(status);
}

std::vector<StepPlan> FakeExecutor::plans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plans_;
}

int64_t FakeExecutor::tokens_executed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tokens_executed_;
}

void FakeExecutor::WipeKv() {
  std::lock_guard<std::mutex> lock(mu_);
  std::fill(kv_.begin(), kv_.end(), -1);
}

Status FakeExecutor::Validate(const StepPlan& plan) const {
  if (plan.sequences.empty()) return absl::InvalidArgumentError("empty plan");
  int64_t rows = 0;  // a scored sequence returns a logit row per token, a drafting one one per draft more
  for (const SequencePlan& seq : plan.sequences) {
    rows += seq.score_tokens.empty() ? 1 + seq.draft_tokens : static_cast<int64_t>(seq.tokens.size());
  }
  if (static_cast<int32_t>(plan.sequences.size()) > options_.max_step_sequences) {
    return absl::ResourceExhaustedError("too many sequences");
  }
  if (rows > max_logit_rows()) return absl::ResourceExhaustedError("too many logit rows");
  int64_t total = 0;
  for (const SequencePlan& seq : plan.sequences) {
    if (seq.tokens.empty()) return absl::InvalidArgumentError("sequence without tokens");
    if (seq.score_tokens.size() > seq.tokens.size()) return absl::InvalidArgumentError("more scores than tokens");
    if (seq.start_pos < 0) return absl::InvalidArgumentError("negative start_pos");
    if (seq.draft_tokens < 0 || static_cast<size_t>(seq.draft_tokens) >= seq.tokens.size() ||
        seq.draft_tokens > options_.max_draft_tokens) {
      return absl::InvalidArgumentError("draft_tokens outside [0, tokens) or beyond the replica's limit");
    }
    if (seq.draft_tokens > 0 && (!seq.sample || !seq.score_tokens.empty() || seq.sampling.logprobs)) {
      return absl::InvalidArgumentError("draft tokens on a plan that scores or asks for logprobs");
    }
    const size_t words = (static_cast<size_t>(options_.n_vocab) + 63) / 64;
    if (!seq.allowed_tokens.empty() && seq.allowed_tokens.size() != words * (1 + seq.draft_tokens)) {
      return absl::InvalidArgumentError("allowed_tokens is not one mask per sample");
    }
    total += static_cast<int64_t>(seq.tokens.size());
    const int64_t end = seq.start_pos + static_cast<int64_t>(seq.tokens.size());
    if (static_cast<int64_t>(seq.block_table.size()) * options_.block_size < end) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.sequence_id, ": block table too short"));
    }
    for (int32_t block : seq.block_table) {
      if (block < 0 || block >= options_.kv_blocks) return absl::InvalidArgumentError("block id out of range");
    }
    for (int32_t token : seq.tokens) {
      if (token < 0 || token >= options_.n_vocab) return absl::InvalidArgumentError("token out of range");
    }
  }
  if (total > options_.max_step_tokens) return absl::ResourceExhaustedError("too many tokens");
  return absl::OkStatus();
}

StatusOr<StepResult> FakeExecutor::Execute(const StepPlan& plan) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failures_left_ > 0) {
    --failures_left_;
    return failure_;
  }
  if (!healthy_) return absl::UnavailableError("fake replica unhealthy");
  if (Status valid = Validate(plan); !valid.ok()) return valid;
  const int bs = options_.block_size;
  auto slot = [&](const SequencePlan& seq, int64_t pos) -> int32_t& {
    return kv_[static_cast<size_t>(seq.block_table[pos / bs]) * bs + pos % bs];
  };
  for (const SequencePlan& seq : plan.sequences) {
    for (size_t i = 0; i < seq.tokens.size(); ++i) slot(seq, seq.start_pos + static_cast<int64_t>(i)) = seq.tokens[i];
  }
  StepResult result;
  result.step_id = plan.step_id;
  for (const SequencePlan& seq : plan.sequences) {
    const int64_t end = seq.start_pos + static_cast<int64_t>(seq.tokens.size());
    std::vector<int32_t> context;  // read back through the block table
    if (seq.sample || !seq.score_tokens.empty()) {
      for (int64_t pos = 0; pos < end; ++pos) {
        const int32_t t = slot(seq, pos);
        if (t < 0) {
          return absl::InternalError(
              absl::StrCat("sequence ", seq.sequence_id, " reads unwritten KV at position ", pos));
        }
        context.push_back(t);
      }
    }
    // A drafting sequence samples after its last real token and after each draft (row j).
    const size_t drafts = static_cast<size_t>(seq.draft_tokens);
    const size_t words = (static_cast<size_t>(options_.n_vocab) + 63) / 64;
    auto sample = [&](size_t row) -> StatusOr<int32_t> {
      int32_t token = next_(std::span<const int32_t>(context).first(context.size() - drafts + row));
      if (seq.allowed_tokens.empty()) return token;
      // Constrained: the first allowed token from the unconstrained choice on (a sampler's mask).
      const TokenMask mask(seq.allowed_tokens.begin() + row * words, seq.allowed_tokens.begin() + (row + 1) * words);
      int32_t tries = 0;
      while (!MaskHas(mask, token) && ++tries <= options_.n_vocab) token = (token + 1) % options_.n_vocab;
      if (!MaskHas(mask, token)) return absl::InvalidArgumentError("allowed_tokens allows no token");
      return token;
    };
    int32_t token = -1;
    if (seq.sample) {
      StatusOr<int32_t> first = sample(0);
      if (!first.ok()) return first.status();
      token = *first;
    }
    result.sequences.push_back({seq.sequence_id, token});
    for (size_t j = 1; j <= drafts; ++j) {
      StatusOr<int32_t> after = sample(j);
      if (!after.ok()) return after.status();
      result.sequences.back().draft_samples.push_back(*after);
    }
    for (size_t j = 0; j < seq.score_tokens.size(); ++j) {
      const int32_t scored = seq.score_tokens[j];
      const std::span<const int32_t> before(context.data(), static_cast<size_t>(seq.start_pos) + j + 1);
      ScoredToken entry{FakePromptLogprob(before, scored), {}};
      for (int k = 0; k < seq.sampling.top_logprobs; ++k) {
        entry.top_logprobs.push_back({(scored + k) % options_.n_vocab, entry.logprob - 0.125f * static_cast<float>(k)});
      }
      result.sequences.back().scored.push_back(std::move(entry));
    }
    if (seq.sample && seq.sampling.logprobs) {
      SequenceResult& sampled = result.sequences.back();
      sampled.has_logprobs = true;
      sampled.logprob = FakeLogprob(token, 0);
      for (int k = 0; k < seq.sampling.top_logprobs; ++k) {
        sampled.top_logprobs.push_back({(token + k) % options_.n_vocab, FakeLogprob(token, k)});
      }
    }
    tokens_executed_ += static_cast<int64_t>(seq.tokens.size());
  }
  plans_.push_back(plan);
  return result;
}

}  // namespace bitfleet::coordinator::testing

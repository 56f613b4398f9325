#include "worker/sequence_session.h"

#include <algorithm>

namespace bitfleet::worker {

SequenceSession::SequenceSession(StepRunner& runner, cache::BlockPool& pool)
    : runner_(runner), pool_(pool), table_(runner.kv_block_size()) {}

SequenceSession::~SequenceSession() { Reset(); }

void SequenceSession::Reset() {
  // Only this session's own blocks are in the table, so releasing cannot fail.
  table_.Release(pool_).IgnoreError();
  position_ = 0;
}

StatusOr<StepLogits> SequenceSession::Feed(std::span<const int32_t> tokens, bool all_logits) {
  BF_RETURN_IF_ERROR(table_.Reserve(pool_, position_ + static_cast<int64_t>(tokens.size())));
  SequenceStep step;
  step.tokens = tokens;
  step.start_pos = position_;
  step.block_table = table_.ids();
  step.all_logits = all_logits;
  BF_ASSIGN_OR_RETURN(StepLogits logits, runner_.Step(std::span<const SequenceStep>(&step, 1)));
  position_ += static_cast<int32_t>(tokens.size());
  return logits;
}

StatusOr<std::span<const float>> SequenceSession::Append(std::span<const int32_t> tokens, int chunk) {
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to append");
  const int limit = runner_.options().max_step_tokens;
  const size_t step = static_cast<size_t>(chunk > 0 ? std::min(chunk, limit) : limit);
  std::span<const float> last;
  for (size_t begin = 0; begin < tokens.size(); begin += step) {
    BF_ASSIGN_OR_RETURN(StepLogits logits, Feed(tokens.subspan(begin, std::min(step, tokens.size() - begin)), false));
    last = logits.Last(0);
  }
  return last;
}

Status SequenceSession::AppendAll(std::span<const int32_t> tokens, std::vector<float>* all_logits, int chunk) {
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to append");
  const RunnerOptions& o = runner_.options();
  const int limit = std::min(o.max_step_tokens, o.max_logit_rows);
  const size_t step = static_cast<size_t>(chunk > 0 ? std::min(chunk, limit) : limit);
  const size_t n_vocab = static_cast<size_t>(runner_.n_vocab());
  all_logits->resize(tokens.size() * n_vocab);
  for (size_t begin = 0; begin < tokens.size(); begin += step) {
    const size_t n = std::min(step, tokens.size() - begin);
    BF_ASSIGN_OR_RETURN(StepLogits logits, Feed(tokens.subspan(begin, n), true));
    for (size_t r = 0; r < n; ++r) {
      std::span<const float> row = logits.Row(0, static_cast<int>(r));
      std::copy(row.begin(), row.end(), all_logits->begin() + (begin + r) * n_vocab);
    }
  }
  return absl::OkStatus();
}

}  // namespace bitfleet::worker

#include "coordinator/draft_proposer.h"

#include <algorithm>

namespace bitfleet::coordinator {

static_assert(kMaxDraftTokens == 16, "the message below names the bound");

const char* DraftOptionsError(const DraftOptions& options) {
  if (options.max_tokens < 0) return "the draft length must be >= 0";
  if (options.max_tokens > kMaxDraftTokens) return "the draft length must be <= 16";
  if (options.min_ngram < 1 || options.max_ngram < options.min_ngram) {
    return "the n-gram lengths must satisfy 1 <= min <= max";
  }
  if (options.max_ngram > 16) return "the longest n-gram must be <= 16";
  if (options.max_batch < 1) return "the drafting batch limit must be >= 1";
  if (!(options.min_keep_chance >= 0.0f && options.min_keep_chance <= 1.0f)) {
    return "the least chance of keeping a draft token must be in [0, 1]";
  }
  return "";
}

int32_t DraftAcceptance::Worth(int32_t available, float min_chance) const {
  const float p = chance();
  float reach = 1.0f;
  int32_t n = 0;
  while (n < available) {
    reach *= p;
    if (reach < min_chance) break;
    ++n;
  }
  return n;
}

void DraftAcceptance::Record(int32_t tried, int32_t kept) {
  if (tried <= 0) return;
  // Evidence k steps old weighs 0.8^k: about a tenth after ten steps.
  constexpr float kDecay = 0.8f;
  kept_ = kept_ * kDecay + static_cast<float>(kept);
  tried_ = tried_ * kDecay + static_cast<float>(tried);
}

int64_t LatestEarlierMatch(std::span<const int32_t> tokens, int64_t n) {
  const int64_t size = static_cast<int64_t>(tokens.size());
  if (n < 1 || size < n + 1) return -1;
  const std::span<const int32_t> tail = tokens.subspan(static_cast<size_t>(size - n));
  // Latest first: what the sequence did most recently is the likeliest to repeat. A match must
  // end before the last token so that at least one token follows it.
  for (int64_t start = size - n - 1; start >= 0; --start) {
    if (tokens[static_cast<size_t>(start + n - 1)] != tail.back()) continue;
    if (std::equal(tail.begin(), tail.end(), tokens.begin() + start)) return start;
  }
  return -1;
}

void DraftFrom(std::span<const int32_t> tokens, int64_t from, int32_t max_tokens, std::vector<int32_t>* draft) {
  // What followed the match, and past the end what the draft itself says: a match `period`
  // tokens back means the text repeats with that period ("a a a" drafts "a a a a", not "a").
  const int64_t size = static_cast<int64_t>(tokens.size());
  draft->clear();
  for (int64_t i = 0; i < max_tokens; ++i) {
    const int64_t at = from + i;
    draft->push_back(at < size ? tokens[static_cast<size_t>(at)] : (*draft)[static_cast<size_t>(at - size)]);
  }
}

void ProposeDraft(std::span<const int32_t> tokens, const DraftOptions& options, int32_t max_tokens,
                  std::vector<int32_t>* draft) {
  draft->clear();
  if (max_tokens <= 0) return;
  for (int64_t n = options.max_ngram; n >= options.min_ngram; --n) {
    const int64_t start = LatestEarlierMatch(tokens, n);
    if (start >= 0) {
      DraftFrom(tokens, start + n, max_tokens, draft);
      return;
    }
  }
}

}  // namespace bitfleet::coordinator

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
  return "";
}

void ProposeDraft(std::span<const int32_t> tokens, const DraftOptions& options, int32_t max_tokens,
                  std::vector<int32_t>* draft) {
  draft->clear();
  const int64_t size = static_cast<int64_t>(tokens.size());
  if (max_tokens <= 0) return;
  for (int64_t n = options.max_ngram; n >= options.min_ngram; --n) {
    if (size < n + 1) continue;
    const std::span<const int32_t> tail = tokens.subspan(static_cast<size_t>(size - n));
    // Latest first: what the sequence did most recently is the likeliest to repeat. A match must
    // end before the last token so that at least one token follows it.
    for (int64_t start = size - n - 1; start >= 0; --start) {
      if (tokens[static_cast<size_t>(start + n - 1)] != tail.back()) continue;
      if (!std::equal(tail.begin(), tail.end(), tokens.begin() + start)) continue;
      const int64_t from = start + n;
      const int64_t end = std::min(size, from + max_tokens);
      draft->assign(tokens.begin() + from, tokens.begin() + end);
      return;
    }
  }
}

}  // namespace bitfleet::coordinator

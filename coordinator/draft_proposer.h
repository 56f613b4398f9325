// Draft tokens for speculative decoding by prompt lookup (docs/scheduler.md, "Speculative
// decoding"): the tokens that followed the latest earlier occurrence of a sequence's last few
// tokens. No draft model: agent and editing workloads repeat much of their context (code being
// rewritten, JSON echoing its input, quoted documents), and a decode step that feeds a few
// guessed tokens costs little more than one when the weights' reads bound it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace bitfleet::coordinator {

// The longest draft a step may carry (each draft token costs a logit row).
inline constexpr int32_t kMaxDraftTokens = 16;

struct DraftOptions {
  int32_t max_tokens = 0;  // longest draft; 0: speculative decoding off
  // Lengths of the tail searched for, longest first (longer matches guess better).
  int32_t max_ngram = 3;
  int32_t min_ngram = 2;
  // Draft only while at most this many sequences decode in a step: a larger batch is bound by
  // arithmetic, where rejected drafts cost what they compute.
  int32_t max_batch = 4;
};

// What is wrong with `options`, or "" when they are usable.
const char* DraftOptionsError(const DraftOptions& options);

// Replaces `draft` with up to `max_tokens` tokens that followed the latest earlier occurrence of
// the last n tokens of `tokens`, for the longest n in [min_ngram, max_ngram] that occurs; empty
// when none does. Time: O(tokens.size() × (max_ngram - min_ngram + 1)) at worst.
void ProposeDraft(std::span<const int32_t> tokens, const DraftOptions& options, int32_t max_tokens,
                  std::vector<int32_t>* draft);

}  // namespace bitfleet::coordinator

// Draft tokens for speculative decoding by prompt lookup (docs/scheduler.md, "Speculative
// decoding"): the tokens that followed the latest earlier occurrence of a sequence's last few
// tokens. No draft model: agent and editing workloads repeat much of their context (code being
// rewritten, JSON echoing its input, quoted documents), and a decode step that feeds a few
// guessed tokens costs little more than one when the weights' reads bound it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "coordinator/executor.h"

namespace bitfleet::coordinator {

struct DraftOptions {
  int32_t max_tokens = 0;  // longest draft; 0: speculative decoding off
  // Lengths of the tail searched for, longest first (longer matches guess better).
  int32_t max_ngram = 3;
  int32_t min_ngram = 2;
  // Draft only while at most this many sequences decode in a step: a larger batch is bound by
  // arithmetic, where rejected drafts cost what they compute.
  int32_t max_batch = 4;
  // A draft's i-th token is fed only when the sequence's estimated chance of keeping it
  // (DraftAcceptance) is at least this: about what one more token costs as a share of a decode
  // step (0.35 for SmolLM2's Q4_1 layers on AVX-512 CPUs; far less on GPUs). 0: always the
  // whole draft.
  float min_keep_chance = 0.35f;
};

// A sequence's record of how its drafts fare: each draft token tried until the first one the
// model did not generate is a trial of a per-token acceptance probability, whose estimate decays
// so that the sequence's recent text counts most. Tokens that could have been drafted but were
// not (the estimate too low) are still tried against what the model generated, so a sequence
// that starts repeating itself gets its drafts back.
class DraftAcceptance {
 public:
  // The estimated chance that a draft token is kept.
  float chance() const { return kept_ / tried_; }
  // Draft tokens worth feeding out of `available`: the longest prefix whose every token is kept
  // with at least `min_chance` (the i-th is reached and kept with chance()^i).
  int32_t Worth(int32_t available, float min_chance) const;
  // `tried` draft tokens were judged (fed or only compared), the first `kept` of them right.
  void Record(int32_t tried, int32_t kept);

 private:
  // A prior of one kept in two tried: a new sequence drafts one token until it shows more.
  float kept_ = 1.0f;
  float tried_ = 2.0f;
};

// What is wrong with `options`, or "" when they are usable.
const char* DraftOptionsError(const DraftOptions& options);

// Replaces `draft` with the `max_tokens` tokens that followed the latest earlier occurrence of
// the last n tokens of `tokens`, for the longest n in [min_ngram, max_ngram] that occurs (past
// the end of `tokens`, the text is taken to repeat with the match's period); empty when none
// does. Time: O(tokens.size() × (max_ngram - min_ngram + 1)) at worst.
void ProposeDraft(std::span<const int32_t> tokens, const DraftOptions& options, int32_t max_tokens,
                  std::vector<int32_t>* draft);

// The pieces of ProposeDraft (DraftIndex shares them): where the latest occurrence of the last
// n tokens starts among those that end before the last token (-1: none), by a scan from the end;
// and the `max_tokens` tokens from position `from` on, continued with period size - from.
int64_t LatestEarlierMatch(std::span<const int32_t> tokens, int64_t n);
void DraftFrom(std::span<const int32_t> tokens, int64_t from, int32_t max_tokens, std::vector<int32_t>* draft);

}  // namespace bitfleet::coordinator

// What a request's output may be (constrained decoding, e.g. response_format json_object): the
// scheduler asks it for the tokens the next sample may take, sends them with the plan (the
// workers' samplers mask the rest: worker/sampler.h), and hands it back every sampled token.
// Model-agnostic: the scheduler sees token ids only; implementations know the vocabulary.
//
// One object per request; called on the scheduler thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/bit_set.h"

namespace bitfleet::coordinator {

// A set of token ids as bits: token t is bit t % 64 of word t / 64.
using TokenMask = std::vector<uint64_t>;

inline bool MaskHas(const TokenMask& mask, int32_t token) { return BitIsSet(mask, token); }

inline bool MaskEmpty(const TokenMask& mask) {
  for (uint64_t word : mask) {
    if (word != 0) return false;
  }
  return true;
}

class OutputConstraint {
 public:
  virtual ~OutputConstraint() = default;
  // The tokens the next sample may take. Valid until the next Accept. Empty when no token can
  // follow: the output is complete (and the vocabulary has no end-of-generation token), or the
  // vocabulary lacks the bytes it needs; the scheduler then ends the request (Complete says how).
  virtual const TokenMask& AllowedTokens() = 0;
  // Whether the output so far is whole (a request ending here has a valid output).
  virtual bool Complete() const = 0;
  // Takes the sampled token. False when AllowedTokens did not allow it (the output is then
  // broken: the caller ends the request with an error).
  virtual bool Accept(int32_t token) = 0;
  // A copy in the same state, which speculative decoding walks through a draft to get the mask of
  // every position; null when the constraint cannot be copied (its requests then get no drafts).
  virtual std::unique_ptr<OutputConstraint> Clone() const { return nullptr; }
};

}  // namespace bitfleet::coordinator

// Finds special tokens (control, unknown and user-defined tokens such as <s>, <|eot_id|>,
// <|START_OF_TURN_TOKEN|>) written literally in text, when the caller allows it. By default
// nothing is matched: text from users stays text, so a prompt cannot forge control tokens.
#pragma once

#include <array>
#include <string_view>
#include <vector>

#include "model/tokenizer/text_range.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

// Which special tokens Encode recognises in text.
enum class SpecialTokenParsing {
  kNone,         // none: all text is plain text (the default, safe for user input)
  kUserDefined,  // user-defined (added) tokens only: what llama.cpp does without parse_special
  kAll,          // control, unknown and user-defined tokens: llama.cpp's parse_special
};

// One piece of partitioned text: either a special token or a stretch of plain text.
struct Fragment {
  TokenId token = kNoToken;  // kNoToken: plain text in `range`
  TextRange range;
};

class SpecialTokenMatcher {
 public:
  explicit SpecialTokenMatcher(const Vocab& vocab);

  // Splits `text` into fragments, scanning left to right and taking at each position the
  // longest allowed special token that starts there. Appends to `out`. Thread-safe.
  void Partition(std::string_view text, SpecialTokenParsing parsing, std::vector<Fragment>* out) const;

 private:
  struct Candidate {
    TokenId id;
    bool user_defined;
    std::string_view text;  // points into the Vocab
  };
  // Candidates by first byte, longest first (ties: lower id first).
  std::array<std::vector<Candidate>, 256> by_first_byte_;
  bool any_ = false;
};

}  // namespace bitfleet::tokenizer

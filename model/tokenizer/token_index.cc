#include "model/tokenizer/token_index.h"

namespace bitfleet::tokenizer {

TokenIndex::TokenIndex(const Vocab& vocab) : types_(vocab.types) {
  ids_.reserve(vocab.tokens.size());
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const std::string& text = vocab.tokens[i];
    if (!text.empty()) ids_.emplace(absl::string_view(text), static_cast<TokenId>(i));
  }
}

}  // namespace bitfleet::tokenizer

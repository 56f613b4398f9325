// Token string -> id lookup over a Vocab's tokens. Keys point into the Vocab, which must
// outlive the index and not change (Tokenizer owns both). Immutable, so thread-safe.
#pragma once

#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

// Whether an encoder may produce a token of this type from ordinary text. Control, unknown
// and user-defined tokens only ever come from the special-token matcher, so user text can
// never turn into, say, <|eot_id|> by way of merges.
inline bool IsTextTokenType(TokenType type) {
  return type == TokenType::kNormal || type == TokenType::kByte || type == TokenType::kUnused ||
         type == TokenType::kUndefined;
}

class TokenIndex {
 public:
  explicit TokenIndex(const Vocab& vocab);

  // The id of the token spelled exactly `text`, or kNoToken.
  TokenId Find(std::string_view text) const {
    auto it = ids_.find(absl::string_view(text.data(), text.size()));
    return it == ids_.end() ? kNoToken : it->second;
  }
  // As Find, but only tokens an encoder may produce from text (see IsTextTokenType).
  TokenId FindTextToken(std::string_view text) const {
    const TokenId id = Find(text);
    return id != kNoToken && IsTextTokenType(types_[id]) ? id : kNoToken;
  }

 private:
  absl::flat_hash_map<absl::string_view, TokenId> ids_;
  const std::vector<TokenType>& types_;
};

}  // namespace bitfleet::tokenizer

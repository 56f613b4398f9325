#include "model/tokenizer/special_tokens.h"

#include <algorithm>

namespace bitfleet::tokenizer {

SpecialTokenMatcher::SpecialTokenMatcher(const Vocab& vocab) {
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const TokenType type = vocab.types[i];
    if (vocab.tokens[i].empty()) continue;
    if (type != TokenType::kControl && type != TokenType::kUnknown && type != TokenType::kUserDefined) {
      continue;
    }
    const std::string_view text = vocab.tokens[i];
    by_first_byte_[static_cast<uint8_t>(text[0])].push_back(
        {static_cast<TokenId>(i), type == TokenType::kUserDefined, text});
    any_ = true;
  }
  for (auto& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [](const Candidate& a, const Candidate& b) {
      return a.text.size() > b.text.size();
    });
  }
}

void SpecialTokenMatcher::Partition(std::string_view text, SpecialTokenParsing parsing,
                                    std::vector<Fragment>* out) const {
  if (text.empty()) return;
  if (parsing == SpecialTokenParsing::kNone || !any_) {
    out->push_back({kNoToken, {0, text.size()}});
    return;
  }
  size_t plain_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const Candidate* found = nullptr;
    for (const Candidate& candidate : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      if (!candidate.user_defined && parsing != SpecialTokenParsing::kAll) continue;
      if (text.substr(pos, candidate.text.size()) == candidate.text) {
        found = &candidate;
        break;  // the bucket is sorted longest first
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    if (pos > plain_begin) out->push_back({kNoToken, {plain_begin, pos}});
    out->push_back({found->id, {pos, pos + found->text.size()}});
    pos += found->text.size();
    plain_begin = pos;
  }
  if (plain_begin < text.size()) out->push_back({kNoToken, {plain_begin, text.size()}});
}

}  // namespace bitfleet::tokenizer

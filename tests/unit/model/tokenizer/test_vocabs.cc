#include "tests/unit/model/tokenizer/test_vocabs.h"

#include <cstdio>

#include "gtest/gtest.h"
#include "model/tokenizer/byte_level.h"

namespace bitfleet::tokenizer::testing {

Vocab MakeSpmVocab() {
  Vocab v;
  v.model = TokenizerModel::kSentencePiece;
  auto add = [&](const std::string& text, float score, TokenType type) {
    v.tokens.push_back(text);
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0, TokenType::kUnknown);
  add("<s>", 0, TokenType::kControl);
  add("</s>", 0, TokenType::kControl);
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    add(hex, 0, TokenType::kByte);
  }
  const std::string sp = "\xE2\x96\x81";  // ▁
  for (const char* c : {"h", "e", "l", "o", "w", "r", "d", "!"}) add(c, -10, TokenType::kNormal);
  add(sp, -10, TokenType::kNormal);
  add(sp + "h", -5, TokenType::kNormal);
  add("he", -4, TokenType::kNormal);
  add("ll", -2, TokenType::kNormal);
  add("lo", -6, TokenType::kNormal);
  add(sp + "he", -3, TokenType::kNormal);
  add("llo", -3, TokenType::kNormal);
  add(sp + "hello", -1, TokenType::kNormal);
  add(sp + "w", -5, TokenType::kNormal);
  add("or", -4, TokenType::kNormal);
  add(sp + "wor", -3, TokenType::kNormal);
  add("ld", -4, TokenType::kNormal);
  add(sp + "world", -1, TokenType::kNormal);
  add("<|user|>", 0, TokenType::kUserDefined);
  v.special.unk = 0;
  v.special.bos = 1;
  v.special.eos = 2;
  v.add_bos = true;
  v.add_space_prefix = true;
  return v;
}

Vocab MakeBpeVocab(const std::string& pre) {
  Vocab v;
  v.model = TokenizerModel::kByteLevelBpe;
  v.pre = pre;
  const ByteLevelMap& map = ByteLevelMap::Get();
  for (int b = 0; b < 256; ++b) v.tokens.emplace_back(map.Encode(static_cast<uint8_t>(b)));
  auto merge = [&](const std::string& left, const std::string& right) {
    v.merges.push_back(left + " " + right);
    v.tokens.push_back(left + right);
  };
  merge("l", "l");
  merge("h", "e");
  merge("he", "ll");
  merge("hell", "o");
  merge("o", "r");
  merge("\xC4\xA0", "w");  // Ġw
  merge("\xC4\xA0w", "or");
  merge("l", "d");
  merge("\xC4\xA0wor", "ld");
  merge("\xC4\xA0", "!");
  v.tokens.push_back("<|endoftext|>");
  v.types.assign(v.tokens.size(), TokenType::kNormal);
  v.types.back() = TokenType::kControl;
  v.special.bos = v.special.eos = static_cast<TokenId>(v.tokens.size() - 1);
  return v;
}

TokenId IdOf(const Vocab& vocab, const std::string& text) {
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    if (vocab.tokens[i] == text) return static_cast<TokenId>(i);
  }
  return kNoToken;
}

std::unique_ptr<Tokenizer> MakeTokenizer(Vocab vocab) {
  auto tok = Tokenizer::Create(std::move(vocab));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

}  // namespace bitfleet::tokenizer::testing

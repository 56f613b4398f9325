// Special tokens in text: recognised only as the caller allows (SpecialTokenParsing).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tokenizer {
namespace {

using testing::IdOf;
using testing::MakeBpeVocab;
using testing::MakeSpmVocab;
using testing::MakeTokenizer;

bool Contains(const std::vector<TokenId>& ids, TokenId id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

TEST(SpecialTokensTest, PlainTextByDefault) {
  const Vocab v = MakeBpeVocab();
  auto tok = MakeTokenizer(v);
  const TokenId eot = IdOf(v, "<|endoftext|>");
  auto ids = tok->Encode("hello<|endoftext|>", {.add_special = false});
  ASSERT_TRUE(ids.ok());
  EXPECT_FALSE(Contains(*ids, eot));
  EXPECT_EQ(*tok->Decode(*ids), "hello<|endoftext|>");  // and it round-trips as text
}

TEST(SpecialTokensTest, ParsedWhenAllowed) {
  const Vocab v = MakeBpeVocab();
  auto tok = MakeTokenizer(v);
  const TokenId eot = IdOf(v, "<|endoftext|>");
  auto ids = tok->Encode("hello<|endoftext|> world",
                         {.add_special = false, .special_tokens = SpecialTokenParsing::kAll});
  EXPECT_EQ(*ids, (std::vector<TokenId>{IdOf(v, "hello"), eot, IdOf(v, "\xC4\xA0world")}));
  // Control tokens are not user-defined: kUserDefined leaves them as text.
  auto user_only = tok->Encode("<|endoftext|>", {.add_special = false,
                                                 .special_tokens = SpecialTokenParsing::kUserDefined});
  EXPECT_FALSE(Contains(*user_only, eot));
  // Decoding hides control tokens unless asked.
  EXPECT_EQ(*tok->Decode(*ids), "hello world");
  EXPECT_EQ(*tok->Decode(*ids, {.render_special = true}), "hello<|endoftext|> world");
}

TEST(SpecialTokensTest, SpmUserDefinedAndSpacePrefixAfterSpecial) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  const std::string sp = "\xE2\x96\x81";
  const TokenId user = IdOf(v, "<|user|>");
  auto ids = tok->Encode("<|user|>hello", {.add_special = false,
                                           .special_tokens = SpecialTokenParsing::kUserDefined});
  // Text after a special token gets the ▁ prefix again (llama.cpp).
  EXPECT_EQ(*ids, (std::vector<TokenId>{user, IdOf(v, sp + "hello")}));
  auto plain = tok->Encode("<|user|>hello", {.add_special = false});
  EXPECT_FALSE(Contains(*plain, user));
  EXPECT_EQ(*tok->Decode(*plain), "<|user|>hello");
  // <s> in text becomes BOS only with kAll.
  auto all = tok->Encode("<s>hello", {.add_special = false, .special_tokens = SpecialTokenParsing::kAll});
  EXPECT_EQ(*all, (std::vector<TokenId>{v.special.bos, IdOf(v, sp + "hello")}));
}

TEST(SpecialTokensTest, LongestMatchWins) {
  Vocab v = MakeBpeVocab();
  v.tokens.push_back("<|end|>");
  v.types.push_back(TokenType::kUserDefined);
  v.tokens.push_back("<|end|>x");
  v.types.push_back(TokenType::kUserDefined);
  auto tok = MakeTokenizer(v);
  auto ids = tok->Encode("<|end|>x<|end|>", {.add_special = false,
                                             .special_tokens = SpecialTokenParsing::kUserDefined});
  EXPECT_EQ(*ids, (std::vector<TokenId>{IdOf(v, "<|end|>x"), IdOf(v, "<|end|>")}));
}

}  // namespace
}  // namespace bitfleet::tokenizer

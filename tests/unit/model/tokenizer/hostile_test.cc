// Hostile vocabularies and inputs: clean errors, never a crash.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tokenizer {
namespace {

using testing::MakeBpeVocab;
using testing::MakeSpmVocab;
using testing::MakeTokenizer;

void ExpectRejected(Vocab v, const std::string& message_part) {
  auto tok = Tokenizer::Create(std::move(v));
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  EXPECT_NE(std::string(tok.status().message()).find(message_part), std::string::npos) << tok.status();
}

TEST(HostileVocabTest, MismatchedArrayLengths) {
  Vocab v = MakeSpmVocab();
  v.scores.pop_back();
  ExpectRejected(v, "scores");
  v = MakeSpmVocab();
  v.types.push_back(TokenType::kNormal);
  ExpectRejected(v, "token types");
}

TEST(HostileVocabTest, SpecialIdsOutOfRange) {
  Vocab v = MakeSpmVocab();
  v.special.bos = static_cast<TokenId>(v.tokens.size());
  ExpectRejected(v, "BOS");
  v = MakeSpmVocab();
  v.special.eot = -7;
  ExpectRejected(v, "EOT");
  v = MakeBpeVocab();
  v.special.bos = kNoToken;
  v.add_bos = true;
  ExpectRejected(v, "add_bos");
}

TEST(HostileVocabTest, BadTokens) {
  Vocab v = MakeSpmVocab();
  v.tokens.clear();
  v.scores.clear();
  v.types.clear();
  ExpectRejected(v, "no tokens");
  v = MakeSpmVocab();
  v.tokens[10] = v.tokens[11];
  ExpectRejected(v, "duplicates");
  v = MakeSpmVocab();
  v.types[5] = static_cast<TokenType>(42);
  ExpectRejected(v, "unknown type");
}

TEST(HostileVocabTest, BadMerges) {
  Vocab v = MakeBpeVocab();
  v.merges.push_back("nospace");
  ExpectRejected(v, "not 'left right'");
  v = MakeBpeVocab();
  v.merges.push_back("h ");
  ExpectRejected(v, "not 'left right'");
  v = MakeBpeVocab();
  v.merges.push_back("qq zz");
  ExpectRejected(v, "'qq', which is not a token");
  v = MakeBpeVocab();
  v.merges.push_back("a b");  // both tokens, but "ab" is not
  ExpectRejected(v, "'ab', which is not a token");
  v = MakeBpeVocab();
  v.merges.clear();
  ExpectRejected(v, "needs merges");
  v = MakeBpeVocab("nonexistent-pre");
  ExpectRejected(v, "unknown pre-tokenizer");
}

TEST(HostileInputTest, InvalidUtf8IsReplacedNotFatal) {
  for (Vocab v : {MakeSpmVocab(), MakeBpeVocab()}) {
    auto tok = MakeTokenizer(v);
    const std::string text = "he\xFFllo \xE2\x82 wor\xC0ld\xF0\x9F";
    auto ids = tok->Encode(text, {.add_special = false});
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*tok->Decode(*ids), SanitizeUtf8(text));
  }
}

TEST(HostileInputTest, LongInputsAndTheSizeLimit) {
  for (Vocab v : {MakeSpmVocab(), MakeBpeVocab()}) {
    auto tok = MakeTokenizer(v);
    std::string text;
    for (int i = 0; i < 50000; ++i) text += "hello world é😁 \n\t";
    auto ids = tok->Encode(text, {.add_special = false});
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*tok->Decode(*ids), text);
    const std::string one_word(1 << 20, 'l');  // one 1 MiB pre-tokenizer word
    auto word_ids = tok->Encode(one_word, {.add_special = false});
    ASSERT_TRUE(word_ids.ok());
    EXPECT_EQ(*tok->Decode(*word_ids), one_word);
    auto too_long = tok->Encode(text, {.max_input_bytes = 1000});
    EXPECT_EQ(too_long.status().code(), absl::StatusCode::kResourceExhausted);
  }
}

TEST(HostileInputTest, DecodeRejectsOutOfRangeIds) {
  auto tok = MakeTokenizer(MakeBpeVocab());
  const std::vector<TokenId> bad = {1, 2, static_cast<TokenId>(tok->size())};
  EXPECT_EQ(tok->Decode(bad).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<TokenId> negative = {-5};
  EXPECT_EQ(tok->Decode(negative).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::tokenizer

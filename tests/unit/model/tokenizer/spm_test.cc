// SentencePiece-style encoding and decoding on a hand-made vocabulary (test_vocabs.h).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tokenizer {
namespace {

using testing::IdOf;
using testing::MakeSpmVocab;
using testing::MakeTokenizer;

const std::string kSp = "\xE2\x96\x81";  // ▁

std::vector<TokenId> Ids(const Vocab& v, const std::vector<std::string>& texts) {
  std::vector<TokenId> ids;
  for (const std::string& t : texts) ids.push_back(IdOf(v, t));
  return ids;
}

TEST(SpmTest, MergesByScoreWithSpacePrefixAndBos) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  auto ids = tok->Encode("hello world");
  ASSERT_TRUE(ids.ok()) << ids.status();
  std::vector<TokenId> expected = {v.special.bos};
  for (TokenId id : Ids(v, {kSp + "hello", kSp + "world"})) expected.push_back(id);
  EXPECT_EQ(*ids, expected);

  auto no_bos = tok->Encode("hello world", {.add_special = false});
  EXPECT_EQ(*no_bos, Ids(v, {kSp + "hello", kSp + "world"}));
}

TEST(SpmTest, EqualScoresMergeLeftmostFirst) {
  // "lll": both pairs score the same; the left one merges, leaving "ll" + "l".
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  auto ids = tok->Encode("lll", {.add_special = false});
  EXPECT_EQ(*ids, Ids(v, {kSp, "ll", "l"}));
}

TEST(SpmTest, ByteFallbackForUnknownCharacters) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  auto ids = tok->Encode("hé", {.add_special = false});
  EXPECT_EQ(*ids, Ids(v, {kSp + "h", "<0xC3>", "<0xA9>"}));
  auto text = tok->Decode(*ids);
  EXPECT_EQ(*text, "hé");
}

TEST(SpmTest, AddSpacePrefixOff) {
  Vocab v = MakeSpmVocab();
  v.add_space_prefix = false;
  auto tok = MakeTokenizer(v);
  auto ids = tok->Encode("hello", {.add_special = false});
  EXPECT_EQ(*ids, Ids(v, {"he", "llo"}));
  EXPECT_EQ(*tok->Decode(*ids), "hello");
}

TEST(SpmTest, DecodeStripsThePrefixSpaceOnce) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  for (const std::string text : {"hello world", "  hello", "", " ", "world!"}) {
    auto with_bos = tok->Encode(text);
    ASSERT_TRUE(with_bos.ok());
    EXPECT_EQ(*tok->Decode(*with_bos), text) << "with BOS: '" << text << "'";
    auto without = tok->Encode(text, {.add_special = false});
    EXPECT_EQ(*tok->Decode(*without), text) << "without BOS: '" << text << "'";
  }
  // A continuation keeps its leading space when asked to.
  auto ids = tok->Encode("hello", {.add_special = false});
  EXPECT_EQ(*tok->Decode(*ids, {.strip_leading_space = false}), " hello");
  // Rendered control tokens come first and take the strip: the space stays, as in HF.
  auto with_bos = tok->Encode("hello");
  EXPECT_EQ(*tok->Decode(*with_bos, {.render_special = true}), "<s> hello");
}

TEST(SpmTest, EmptyTextGivesOnlyBos) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  EXPECT_EQ(*tok->Encode(""), (std::vector<TokenId>{v.special.bos}));
  EXPECT_TRUE(tok->Encode("", {.add_special = false})->empty());
}

TEST(SpmTest, MissingTokenTypesAreInferred) {
  // llama2.c conversions carry tokens and scores only.
  Vocab v = MakeSpmVocab();
  v.types.clear();
  auto tok = MakeTokenizer(v);
  EXPECT_EQ(tok->vocab().types[1], TokenType::kControl);
  EXPECT_EQ(tok->vocab().types[3 + 0x41], TokenType::kByte);
  EXPECT_EQ(tok->vocab().types[0], TokenType::kUnknown);
  auto ids = tok->Encode("\n", {.add_special = false});
  EXPECT_EQ(*tok->Decode(*ids), "\n");
  EXPECT_TRUE(tok->IsEndOfGeneration(v.special.eos));
}

}  // namespace
}  // namespace bitfleet::tokenizer

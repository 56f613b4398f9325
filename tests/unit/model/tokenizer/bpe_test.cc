// Byte-level BPE encoding and decoding on a hand-made vocabulary (test_vocabs.h).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tokenizer {
namespace {

using testing::IdOf;
using testing::MakeBpeVocab;
using testing::MakeTokenizer;

const EncodeOptions kNoSpecial = {.add_special = false};

TEST(BpeTest, MergesByRank) {
  const Vocab v = MakeBpeVocab();
  auto tok = MakeTokenizer(v);
  auto ids = tok->Encode("hello world", kNoSpecial);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<TokenId>{IdOf(v, "hello"), IdOf(v, "\xC4\xA0world")}));
  EXPECT_EQ(*tok->Decode(*ids), "hello world");
}

TEST(BpeTest, EqualRanksMergeLeftmostFirst) {
  const Vocab v = MakeBpeVocab();
  auto tok = MakeTokenizer(v);
  EXPECT_EQ(*tok->Encode("lll", kNoSpecial), (std::vector<TokenId>{IdOf(v, "ll"), TokenId{'l'}}));
}

TEST(BpeTest, EveryByteRoundTrips) {
  const Vocab v = MakeBpeVocab();
  auto tok = MakeTokenizer(v);
  std::string all;
  for (int b = 1; b < 128; ++b) all.push_back(static_cast<char>(b));
  all += "é€😁";
  auto ids = tok->Encode(all, kNoSpecial);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*tok->Decode(*ids), all);
}

TEST(BpeTest, NoBosUnlessTheVocabAsks) {
  Vocab v = MakeBpeVocab();
  auto tok = MakeTokenizer(v);
  EXPECT_EQ(tok->Encode("hello")->size(), 1u);
  v.add_bos = true;
  auto with_bos = MakeTokenizer(v);
  EXPECT_EQ(*with_bos->Encode("hello"), (std::vector<TokenId>{v.special.bos, IdOf(v, "hello")}));
  EXPECT_EQ(*with_bos->Decode(*with_bos->Encode("hello")), "hello");  // BOS hidden
}

TEST(BpeTest, IgnoreMergesTakesWholeWordTokens) {
  // Llama 3: a word that is a token is used whole even when no merge path builds it.
  Vocab v = MakeBpeVocab("llama-bpe");
  v.tokens.push_back("xyz");
  v.types.push_back(TokenType::kNormal);
  auto tok = MakeTokenizer(v);
  EXPECT_EQ(*tok->Encode("xyz", kNoSpecial), (std::vector<TokenId>{IdOf(v, "xyz")}));
  auto gpt2 = MakeTokenizer([&] { Vocab g = v; g.pre = "gpt-2"; return g; }());
  EXPECT_EQ(gpt2->Encode("xyz", kNoSpecial)->size(), 3u);
}

TEST(BpeTest, BytesTheVocabCannotSpellBecomeUnkOrAreDropped) {
  Vocab v = MakeBpeVocab();
  // Remove the token of byte 0x01 by renaming it (its id stays taken).
  v.tokens[1] = "<unused-1>";
  v.types[1] = TokenType::kUnused;
  auto dropped = MakeTokenizer(v);
  EXPECT_EQ(*dropped->Encode("a\x01" "b", kNoSpecial), (std::vector<TokenId>{'a', 'b'}));
  v.special.unk = v.special.eos;
  auto with_unk = MakeTokenizer(v);
  EXPECT_EQ(*with_unk->Encode("a\x01" "b", kNoSpecial), (std::vector<TokenId>{'a', v.special.unk, 'b'}));
}

}  // namespace
}  // namespace bitfleet::tokenizer

// `eval --target`'s splitting of a long text for the server's Tokenize calls: the pieces join to
// the text, stay within the limit, end after a newline that a non-space byte follows, and a
// byte-level BPE tokenizer gives the pieces the tokens it gives the whole text.
#include "tools/commands/eval_served.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tools {
namespace {

std::string SampleText() {
  std::string text;
  for (int i = 0; i < 60; ++i) {
    text += i % 3 == 0 ? " = hello world =\n\n" : "hello  world !\n";
    if (i % 7 == 0) text += "   \n\thello\n";
  }
  return text;
}

TEST(SplitForTokenizeTest, PiecesJoinToTheTextAndEndAtSafeNewlines) {
  const std::string text = SampleText();
  EXPECT_EQ(SplitForTokenize(text, text.size()).size(), 1u);
  const std::vector<std::string_view> pieces = SplitForTokenize(text, 64);
  ASSERT_GT(pieces.size(), 10u);
  std::string joined;
  for (size_t p = 0; p < pieces.size(); ++p) {
    EXPECT_LE(pieces[p].size(), 64u);
    joined += pieces[p];
    if (p + 1 < pieces.size()) {
      EXPECT_EQ(pieces[p].back(), '\n') << p;
      const char next = pieces[p + 1].front();
      EXPECT_TRUE(next != ' ' && next != '\n' && next != '\t') << p;
    }
  }
  EXPECT_EQ(joined, text);
  // No newline to cut at: cut at the limit.
  const std::string line(100, 'x');
  const auto hard = SplitForTokenize(line, 64);
  ASSERT_EQ(hard.size(), 2u);
  EXPECT_EQ(hard[0].size(), 64u);
}

TEST(SplitForTokenizeTest, ByteLevelBpeGivesThePiecesTheWholeTextsTokens) {
  const auto tokenizer = tokenizer::testing::MakeTokenizer(tokenizer::testing::MakeBpeVocab());
  tokenizer::EncodeOptions plain;
  plain.add_special = false;
  const std::string text = SampleText();
  auto whole = tokenizer->Encode(text, plain);
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::vector<int32_t> pieced;
  for (std::string_view piece : SplitForTokenize(text, 64)) {
    auto ids = tokenizer->Encode(piece, plain);
    ASSERT_TRUE(ids.ok()) << ids.status();
    pieced.insert(pieced.end(), ids->begin(), ids->end());
  }
  EXPECT_EQ(pieced, *whole);
}

}  // namespace
}  // namespace bitfleet::tools

#include "model/tokenizer/pre_tokenizer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::tokenizer {
namespace {

std::vector<std::string> Split(const std::string& name, const std::string& text) {
  auto pre = PreTokenizer::Create(name);
  EXPECT_TRUE(pre.ok()) << pre.status();
  if (!pre.ok()) return {};
  std::vector<TextRange> ranges;
  const Status status = (*pre)->Split(text, &ranges);
  EXPECT_TRUE(status.ok()) << status;
  std::vector<std::string> words;
  size_t expected_begin = 0;
  for (const TextRange& r : ranges) {
    EXPECT_EQ(r.begin, expected_begin) << "ranges must tile the text";
    expected_begin = r.end;
    words.emplace_back(r.Of(text));
  }
  EXPECT_EQ(expected_begin, text.size());
  return words;
}

using Words = std::vector<std::string>;

TEST(PreTokenizerTest, EveryNamedPreTokenizerCompiles) {
  for (std::string_view name : PreTokenizerNames()) {
    auto pre = PreTokenizer::Create(name);
    EXPECT_TRUE(pre.ok()) << name << ": " << pre.status();
  }
  EXPECT_NE(FindPreTokenizerSpec(""), nullptr);  // empty means default
}

TEST(PreTokenizerTest, UnknownNameIsAnError) {
  auto pre = PreTokenizer::Create("no-such-thing");
  ASSERT_FALSE(pre.ok());
  EXPECT_EQ(pre.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(pre.status().message()).find("llama-bpe"), std::string::npos);
}

TEST(PreTokenizerTest, Gpt2) {
  EXPECT_EQ(Split("gpt-2", "Hello world's  end!!"),
            (Words{"Hello", " world", "'s", " ", " end", "!!"}));
  EXPECT_EQ(Split("gpt-2", "a   \n"), (Words{"a", "   \n"}));
  EXPECT_EQ(Split("gpt-2", "x 12345"), (Words{"x", " 12345"}));
}

TEST(PreTokenizerTest, Llama3GroupsDigitsByThreeAndFoldsContractionCase) {
  EXPECT_EQ(Split("llama-bpe", "Hello, y'all! 12345"),
            (Words{"Hello", ",", " y", "'all", "!", " ", "123", "45"}));
  EXPECT_EQ(Split("llama-bpe", "I'M here\n\n  ok"), (Words{"I", "'M", " here", "\n\n", " ", " ok"}));
}

TEST(PreTokenizerTest, Qwen2SplitsEveryDigit) {
  EXPECT_EQ(Split("qwen2", "x=123"), (Words{"x", "=", "1", "2", "3"}));
}

TEST(PreTokenizerTest, StarcoderFamilySplitsDigitsFirst) {
  EXPECT_EQ(Split("starcoder", "v 42 ok"), (Words{"v", " ", "4", "2", " ok"}));
}

TEST(PreTokenizerTest, DeepSeekLlm) {
  EXPECT_EQ(Split("deepseek-llm", "ab  \n"), (Words{"ab", "  ", "\n"}));
  EXPECT_EQ(Split("deepseek-llm", "中文abc"), (Words{"中文", "abc"}));
  EXPECT_EQ(Split("deepseek-llm", "a  b   "), (Words{"a", " ", " b", "   "}));
}

TEST(PreTokenizerTest, LongInputsSplitWithoutError) {
  const std::string spaces(1 << 20, ' ');
  EXPECT_EQ(Split("llama-bpe", spaces + "x").size(), 2u);
  EXPECT_EQ(Split("gpt-2", std::string(1 << 20, 'a')).size(), 1u);
  // DeepSeek's trailing-whitespace rule on long runs (quadratic if written naively).
  EXPECT_EQ(Split("deepseek-llm", spaces + "\xF0\x9F\x98\x81").size(), 1u);
  EXPECT_EQ(Split("deepseek-llm", "\xF0\x9F\x98\x81" + spaces).size(), 2u);
  EXPECT_EQ(Split("deepseek-llm", spaces + "\xF0\x9F\x98\x81" + spaces).size(), 2u);
}

}  // namespace
}  // namespace bitfleet::tokenizer

#include "tools/commands/engine_setup.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tools {
namespace {

TEST(ParseTokenListTest, AcceptsCommasAndWhitespace) {
  auto ids = ParseTokenList("1,2, 3\n4\t5,,");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(ParseTokenList("")->empty());
  auto negative = ParseTokenList("-7");
  ASSERT_TRUE(negative.ok());
  EXPECT_EQ((*negative)[0], -7);  // the runner rejects it, with the vocabulary size
}

TEST(ParseTokenListTest, RejectsAnythingElse) {
  EXPECT_FALSE(ParseTokenList("1,x").ok());
  EXPECT_FALSE(ParseTokenList("1.5").ok());
  EXPECT_FALSE(ParseTokenList("12a").ok());
  EXPECT_FALSE(ParseTokenList("99999999999").ok());
}

// A ChatML vocabulary: the test BPE vocabulary plus the two turn markers as control tokens.
std::unique_ptr<tokenizer::Tokenizer> ChatMlTokenizer() {
  tokenizer::Vocab vocab = tokenizer::testing::MakeBpeVocab();
  tokenizer::InferTokenTypes(&vocab);
  for (const char* marker : {"<|im_start|>", "<|im_end|>"}) {
    vocab.tokens.push_back(marker);
    vocab.types.push_back(tokenizer::TokenType::kControl);
  }
  return tokenizer::testing::MakeTokenizer(std::move(vocab));
}

std::string Rendered(const tokenizer::Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  auto text = tokenizer.Decode(ids, {.render_special = true});
  return text.ok() ? *text : std::string(text.status().message());
}

TEST(EncodeChatTest, UsesTheTemplatesDefaultSystemMessage) {
  // Shaped like SmolLM2-135M-Instruct's tokenizer.chat_template.
  const std::string smol =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\nYou are a helpful bot<|im_end|>\n' }}"
      "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  auto tokenizer = ChatMlTokenizer();
  std::vector<int32_t> turn_end;
  auto ids = EncodeChat(smol, *tokenizer, "", "Hi?", &turn_end);
  ASSERT_TRUE(ids.ok()) << ids.status();
  // `run --chat` stops where the server would: at the template's end of turn too.
  EXPECT_EQ(turn_end, std::vector<int32_t>{tokenizer::testing::IdOf(tokenizer->vocab(), "<|im_end|>")});
  EXPECT_EQ(Rendered(*tokenizer, *ids),
            "<|im_start|>system\nYou are a helpful bot<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
            "<|im_start|>assistant\n");
  ids = EncodeChat(smol, *tokenizer, "Be brief.", "Hi?");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Rendered(*tokenizer, *ids),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(EncodeChatTest, AnyTemplateOfTheSubsetAndClearErrorsOtherwise) {
  auto tokenizer = ChatMlTokenizer();
  auto ids = EncodeChat("{% for m in messages %}[{{ m.role|upper }}] {{ m.content }}\n{% endfor %}[ASSISTANT]",
                        *tokenizer, "", "x");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(Rendered(*tokenizer, *ids), "[USER] x\n[ASSISTANT]");
  auto bad = EncodeChat("{% for m in messages %}{{ m.content }}", *tokenizer, "", "x");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("endfor"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace bitfleet::tools

#include "tools/commands/engine_setup.h"

#include "gtest/gtest.h"

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

TEST(RenderChatMlTest, UsesTheTemplatesDefaultSystemMessage) {
  // SmolLM2-135M-Instruct's tokenizer.chat_template.
  const std::string smol =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
      "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  auto text = RenderChatMl(smol, "", "Hi?");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n");
  text = RenderChatMl(smol, "Be brief.", "Hi?");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(RenderChatMlTest, PlainChatMlWithoutDefaultSystem) {
  auto text = RenderChatMl("{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}", "", "x");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(RenderChatMl("{{ bos_token }}[INST]", "", "x").status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace bitfleet::tools

#include "model/synth/synth_vocab.h"

#include <set>
#include <string>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace bitfleet::synth {
namespace {

constexpr char kMarker[] = "\xE2\x96\x81";

TEST(SynthVocabTest, LayoutAndSize) {
  for (uint32_t n : {259u, 260u, 1024u, 32000u, 32002u}) {
    auto vocab = BuildSynthVocab(n);
    ASSERT_TRUE(vocab.ok()) << n;
    ASSERT_EQ(vocab->tokens.size(), n);
    ASSERT_EQ(vocab->scores.size(), n);
    ASSERT_EQ(vocab->types.size(), n);
    EXPECT_EQ(vocab->tokens[0], "<unk>");
    EXPECT_EQ(vocab->types[0], static_cast<int32_t>(TokenType::kUnknown));
    EXPECT_EQ(vocab->tokens[1], "<s>");
    EXPECT_EQ(vocab->tokens[2], "</s>");
    EXPECT_EQ(vocab->types[2], static_cast<int32_t>(TokenType::kControl));
    for (int b = 0; b < 256; ++b) {
      EXPECT_EQ(vocab->tokens[kFirstByteId + b], absl::StrFormat("<0x%02X>", b));
      EXPECT_EQ(vocab->types[kFirstByteId + b], static_cast<int32_t>(TokenType::kByte));
    }
    for (uint32_t i = kSpecialAndByteTokens; i < n; ++i) {
      EXPECT_EQ(vocab->types[i], static_cast<int32_t>(TokenType::kNormal));
      EXPECT_EQ(vocab->scores[i], -static_cast<float>(i - kSpecialAndByteTokens));
    }
    EXPECT_EQ(std::set<std::string>(vocab->tokens.begin(), vocab->tokens.end()).size(), n) << "duplicates";
  }
}

TEST(SynthVocabTest, WordsAndTheirPrefixesArePieces) {
  auto vocab = BuildSynthVocab(1024);
  ASSERT_TRUE(vocab.ok());
  const std::set<std::string> pieces(vocab->tokens.begin(), vocab->tokens.end());
  EXPECT_EQ(vocab->tokens[kSpecialAndByteTokens], kMarker);
  for (const char* p : {"the", "th", "t", "and", "an", "of", "a", "people", "peopl"}) {
    EXPECT_TRUE(pieces.count(std::string(kMarker) + p)) << p;
  }
  for (const char* c : {"a", "Z", "0", "!", "~"}) EXPECT_TRUE(pieces.count(c)) << c;
}

TEST(SynthVocabTest, LargeVocabularyIsFilledDeterministically) {
  auto a = BuildSynthVocab(128256);
  auto b = BuildSynthVocab(128256);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(std::set<std::string>(a->tokens.begin(), a->tokens.end()).size(), 128256u);
  // Prefix closure holds across the filler: every multi-letter piece's shorter prefix exists.
  const std::set<std::string> pieces(a->tokens.begin(), a->tokens.end());
  EXPECT_TRUE(pieces.count(std::string(kMarker) + "zz"));
  EXPECT_TRUE(pieces.count(std::string(kMarker) + "abcd"));
}

TEST(SynthVocabTest, TooSmallIsRejected) {
  EXPECT_EQ(BuildSynthVocab(258).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::synth

// IncrementalDecoder: complete characters as soon as possible, never a broken sequence, and
// the same text as a whole Decode.
#include "model/tokenizer/incremental_decoder.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer/utf8.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tokenizer {
namespace {

using testing::IdOf;
using testing::MakeBpeVocab;
using testing::MakeSpmVocab;
using testing::MakeTokenizer;

const std::string kFffd(kReplacementChar);

std::vector<std::string> PushAll(IncrementalDecoder& decoder, const std::vector<TokenId>& ids) {
  std::vector<std::string> out;
  for (TokenId id : ids) {
    auto piece = decoder.Push(id);
    EXPECT_TRUE(piece.ok()) << piece.status();
    out.push_back(piece.ok() ? *piece : "");
  }
  return out;
}

TEST(IncrementalDecoderTest, HoldsBackSplitCharactersUntilComplete) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  const auto byte = [&](int b) { return static_cast<TokenId>(3 + b); };  // <0xNN> ids
  IncrementalDecoder decoder(*tok, {.strip_leading_space = false});
  // "h" then 😁 as four byte-fallback tokens, then "!".
  const std::vector<TokenId> ids = {IdOf(v, "h"), byte(0xF0), byte(0x9F), byte(0x98), byte(0x81), IdOf(v, "!")};
  EXPECT_EQ(PushAll(decoder, ids), (std::vector<std::string>{"h", "", "", "", "😁", "!"}));
  EXPECT_EQ(decoder.Finish(), "");
}

TEST(IncrementalDecoderTest, InvalidBytesBecomeReplacementCharacters) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  const auto byte = [&](int b) { return static_cast<TokenId>(3 + b); };
  IncrementalDecoder decoder(*tok);
  // E2 82 then "h": the cut-off sequence is one U+FFFD, emitted when "h" shows it is broken.
  EXPECT_EQ(PushAll(decoder, {byte(0xE2), byte(0x82), IdOf(v, "h"), byte(0xFF)}),
            (std::vector<std::string>{"", "", kFffd + "h", kFffd}));
  // A sequence still open at the end is flushed by Finish.
  EXPECT_EQ(PushAll(decoder, {byte(0xF0), byte(0x9F)}), (std::vector<std::string>{"", ""}));
  EXPECT_EQ(decoder.pending_bytes(), 2u);
  EXPECT_EQ(decoder.Finish(), kFffd);
  EXPECT_EQ(decoder.pending_bytes(), 0u);
}

TEST(IncrementalDecoderTest, MatchesSanitizedWholeDecode) {
  const Vocab v = MakeBpeVocab();
  auto tok = MakeTokenizer(v);
  const std::string text = "hello world é€😁 \x01!!";
  auto ids = tok->Encode(text);
  ASSERT_TRUE(ids.ok());
  // Every prefix of the stream, finished early, equals the sanitized decode of that prefix.
  for (size_t n = 0; n <= ids->size(); ++n) {
    const std::vector<TokenId> prefix(ids->begin(), ids->begin() + n);
    IncrementalDecoder decoder(*tok);
    std::string streamed;
    for (const std::string& piece : PushAll(decoder, prefix)) streamed += piece;
    streamed += decoder.Finish();
    EXPECT_EQ(streamed, SanitizeUtf8(*tok->Decode(prefix))) << "prefix of " << n << " tokens";
  }
}

TEST(IncrementalDecoderTest, LeadingSpaceRuleMatchesDecode) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  auto ids = tok->Encode("hello world");
  IncrementalDecoder decoder(*tok);
  std::string streamed;
  for (const std::string& piece : PushAll(decoder, *ids)) streamed += piece;
  EXPECT_EQ(streamed, "hello world");
  decoder.Reset();
  EXPECT_EQ(*decoder.Push(IdOf(v, "\xE2\x96\x81hello")), "hello");  // re-armed by Reset
}

TEST(IncrementalDecoderTest, RejectsOutOfRangeIdsAndKeepsState) {
  const Vocab v = MakeSpmVocab();
  auto tok = MakeTokenizer(v);
  IncrementalDecoder decoder(*tok, {.strip_leading_space = false});
  ASSERT_TRUE(decoder.Push(3 + 0xC3).ok());
  EXPECT_EQ(decoder.Push(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decoder.Push(static_cast<TokenId>(v.tokens.size())).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*decoder.Push(3 + 0xA9), "é");
}

}  // namespace
}  // namespace bitfleet::tokenizer

#include "model/tokenizer/utf8.h"

#include "gtest/gtest.h"
#include "model/tokenizer/byte_level.h"

namespace bitfleet::tokenizer {
namespace {

const std::string kFffd(kReplacementChar);

TEST(Utf8Test, ScansWellFormedSequences) {
  const Utf8Scan a = ScanUtf8("A");
  EXPECT_EQ(a.kind, Utf8Scan::Kind::kValid);
  EXPECT_EQ(a.length, 1);
  const Utf8Scan euro = ScanUtf8("\xE2\x82\xAC");
  EXPECT_EQ(euro.kind, Utf8Scan::Kind::kValid);
  EXPECT_EQ(euro.length, 3);
  EXPECT_EQ(euro.code_point, 0x20ACu);
  const Utf8Scan emoji = ScanUtf8("\xF0\x9F\x98\x81");
  EXPECT_EQ(emoji.code_point, 0x1F601u);
  EXPECT_EQ(emoji.length, 4);
}

TEST(Utf8Test, DistinguishesIncompleteFromInvalid) {
  EXPECT_EQ(ScanUtf8("\xE2\x82").kind, Utf8Scan::Kind::kIncomplete);
  EXPECT_EQ(ScanUtf8("\xF0").kind, Utf8Scan::Kind::kIncomplete);
  const Utf8Scan bad = ScanUtf8("\xE2\x82" "A");
  EXPECT_EQ(bad.kind, Utf8Scan::Kind::kInvalid);
  EXPECT_EQ(bad.length, 2);  // the maximal subpart E2 82
  EXPECT_EQ(ScanUtf8("\x80").kind, Utf8Scan::Kind::kInvalid);
  EXPECT_EQ(ScanUtf8("\xC0\xAF").length, 1);      // overlong lead byte
  EXPECT_EQ(ScanUtf8("\xED\xA0\x80").length, 1);  // surrogate: ED must be followed by 80..9F
  EXPECT_EQ(ScanUtf8("\xF4\x90\x80\x80").length, 1);  // above U+10FFFF
}

TEST(Utf8Test, SanitizeReplacesMaximalSubparts) {
  EXPECT_EQ(SanitizeUtf8("plain é text"), "plain é text");
  EXPECT_EQ(SanitizeUtf8("a\xFF" "b"), "a" + kFffd + "b");
  EXPECT_EQ(SanitizeUtf8("\xE2\x82" "A"), kFffd + "A");
  EXPECT_EQ(SanitizeUtf8("\xF0\x80\x80"), kFffd + kFffd + kFffd);  // F0 needs 90..BF next
  EXPECT_EQ(SanitizeUtf8("end\xE2\x82"), "end" + kFffd);         // cut-off sequence
  EXPECT_TRUE(IsValidUtf8(SanitizeUtf8("\xC3\x28\xA0\xA1\xE2\x28\xA1")));
  EXPECT_FALSE(IsValidUtf8("\xC3\x28"));
  EXPECT_TRUE(IsValidUtf8(std::string("nul\0inside", 10)));
}

TEST(Utf8Test, AppendUtf8RoundTrips) {
  for (uint32_t cp : {0x41u, 0xE9u, 0x20ACu, 0x1F601u, 0x10FFFFu}) {
    std::string s;
    AppendUtf8(cp, &s);
    const Utf8Scan scan = ScanUtf8(s);
    EXPECT_EQ(scan.kind, Utf8Scan::Kind::kValid);
    EXPECT_EQ(scan.code_point, cp);
    EXPECT_EQ(static_cast<size_t>(scan.length), s.size());
  }
}

TEST(ByteLevelMapTest, MatchesGpt2Mapping) {
  const ByteLevelMap& map = ByteLevelMap::Get();
  EXPECT_EQ(map.Encode(' '), "\xC4\xA0");   // Ġ U+0120
  EXPECT_EQ(map.Encode('\n'), "\xC4\x8A");  // Ċ U+010A
  EXPECT_EQ(map.Encode(0), "\xC4\x80");     // Ā U+0100
  EXPECT_EQ(map.Encode('!'), "!");
  EXPECT_EQ(map.Encode(0xE9), "\xC3\xA9");  // é maps to itself
  EXPECT_EQ(map.Encode(0xAD), "\xC5\x83");  // soft hyphen: the last remapped byte, U+0143
  for (int b = 0; b < 256; ++b) {
    const Utf8Scan scan = ScanUtf8(map.Encode(static_cast<uint8_t>(b)));
    ASSERT_EQ(scan.kind, Utf8Scan::Kind::kValid);
    EXPECT_EQ(map.Decode(scan.code_point), b);
  }
  EXPECT_EQ(map.Decode(0x20AC), -1);
}

}  // namespace
}  // namespace bitfleet::tokenizer

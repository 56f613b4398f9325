// JsonState: every byte of a JSON object text is accepted and the document completes at its last
// byte; the first byte that no JSON object text continues with is refused, leaving the state as
// it was.
#include "coordinator/json_grammar.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/unit/coordinator/json_schema_oracle.h"

namespace bitfleet::coordinator {
namespace {

using testing::Feed;

TEST(JsonGrammarTest, ObjectTextsAreAcceptedAndCompleteAtTheirEnd) {
  const std::string docs[] = {
      "{}",
      " \n{ }",
      R"({"a":1})",
      R"({"a": [1, -2.5e+3, 0, -0.0, 1E5, 3e-2, true, false, null, {"b": "x\"\\\/\b\f\n\r\t\u00e9 é 😀"}], "c": {}})",
      R"({"nested": [[[]], [{}], {"k": [1, [2, [3]]]}]})",
      R"({"": ""})",
  };
  for (const std::string& doc : docs) {
    JsonState state;
    for (size_t i = 0; i < doc.size(); ++i) {
      ASSERT_FALSE(state.complete()) << doc << " complete before byte " << i;
      ASSERT_TRUE(state.Advance(static_cast<uint8_t>(doc[i]))) << doc << ": byte " << i << " refused";
    }
    EXPECT_TRUE(state.complete()) << doc;
  }
}

// Pretty-printed with 4-space indentation 12 levels deep (a newline and 48 spaces in a row).
TEST(JsonGrammarTest, DeepPrettyPrintingFits) {
  const int depth = 12;
  std::string doc = "{";
  for (int d = 1; d <= depth; ++d) {
    doc.push_back('\n');
    doc.append(static_cast<size_t>(4 * d), ' ');
    doc.append(d < depth ? "\"k\": {" : "\"k\": 1");
  }
  for (int d = depth - 1; d >= 0; --d) {
    doc.push_back('\n');
    doc.append(static_cast<size_t>(4 * d), ' ');
    doc.push_back('}');
  }
  JsonState state;
  EXPECT_EQ(Feed(state, doc), doc.size());
  EXPECT_TRUE(state.complete());
}

TEST(JsonGrammarTest, TheFirstImpossibleByteIsRefused) {
  struct Case {
    std::string text;
    size_t refused_at;
  };
  const Case cases[] = {
      {"[]", 0},                       // the top level is an object
      {"\"a\"", 0},
      {R"({"a":01})", 6},              // no leading zeros
      {R"({"a":1.})", 7},              // a fraction needs a digit
      {R"({"a":-})", 6},
      {R"({"a":1e})", 7},
      {R"({a:1})", 1},                 // keys are strings
      {R"({"a" 1})", 5},
      {R"({"a":tru})", 8},
      {R"({"a":nul})", 8},
      {R"({"a":1,})", 7},              // no trailing comma
      {R"({"a":[1,]})", 8},
      {R"({"a":[1})", 7},              // closes must match
      {"{\"a\":\"x\ny\"}", 7},         // raw control characters
      {R"({"a":"\x"})", 7},            // unknown escape
      {R"({"a":"\u12G4"})", 10},
      {"{\"a\":\"\xC3(\"}", 7},        // a UTF-8 continuation byte missing
      {"{\"a\":\"\xFF\"}", 6},         // never a UTF-8 byte
      {"{}x", 2},                      // nothing after the document
      {"{} ", 2},
      {R"({"a":1 2})", 7},
      {R"({"a":123456789012345678901})", 25},  // numbers stay within a double's range
      {R"({"a":-1.5e123})", 12},
      {"{\"a\":\"\xE0\x80\x80\"}", 7},  // UTF-8: an overlong form
      {"{\"a\":\"\xED\xA0\x80\"}", 7},  // an encoded surrogate
      {"{\"a\":\"\xF4\x90\x80\x80\"}", 7},  // past U+10FFFF
      {"{\"a\":\"\xC1\xBF\"}", 6},
  };
  for (const Case& c : cases) {
    JsonState state;
    EXPECT_EQ(Feed(state, c.text), c.refused_at) << c.text;
    EXPECT_EQ(state.complete(), c.text.starts_with("{}")) << c.text;
  }
}

TEST(JsonGrammarTest, NestingIsBounded) {
  JsonState deep;
  const std::string opens = "{\"a\":" + std::string(JsonState::kMaxDepth - 1, '[');
  EXPECT_EQ(Feed(deep, opens), opens.size());
  EXPECT_FALSE(deep.Advance('['));  // a 33rd container
  EXPECT_FALSE(deep.Advance('{'));
  EXPECT_TRUE(deep.Advance(']'));
}

TEST(JsonGrammarTest, WhitespaceRunsAreBoundedAndResetByOtherBytes) {
  JsonState state;
  const std::string run(JsonState::kMaxWhitespaceRun, ' ');
  EXPECT_EQ(Feed(state, run), run.size());
  EXPECT_FALSE(state.Advance(' '));
  const std::string doc = "{" + run + "\"a\"" + run + ":" + run + "1" + run + "}";
  EXPECT_EQ(Feed(state, doc), doc.size());
  EXPECT_TRUE(state.complete());
}

TEST(JsonGrammarTest, EqualStatesHashEqually) {
  JsonState a, b;
  Feed(a, R"({"x": [1, {"y": "ab)");
  Feed(b, R"({"zz": [2, {"q": "c)");
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.Hash(), b.Hash());
  JsonState c;
  Feed(c, R"({"x": {"y": "ab)");
  EXPECT_FALSE(a == c);
}

}  // namespace
}  // namespace bitfleet::coordinator

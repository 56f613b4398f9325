// JsonVocabulary and JsonConstraint: the trie walk's masks equal a scan of every token (the
// scalar reference) along random constrained generations, the masks allow exactly what keeps the
// output a JSON object prefix, and a constrained output ends as a whole document.
#include "coordinator/json_constraint.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::coordinator {
namespace {

constexpr int32_t kEos = 1;

// JSON-ish fragments a BPE vocabulary has, including multi-byte and split UTF-8 ones; token 0 is
// a control token (no bytes), token 1 the end of generation.
std::vector<std::string> Vocabulary() {
  std::vector<std::string> v = {"", "</s>"};
  // Every single byte, as byte-level vocabularies have (so some token always continues).
  for (int b = 1; b < 256; ++b) v.emplace_back(1, static_cast<char>(b));
  for (const char* piece :
       {"{", "}", "[", "]", "\"", ":", ",", " ", "\n", "  ", "{\"", "\":", "\",", "\"}", "},", "}}", "]]", "[{",
        ", \"", "\": \"", "0", "1", "12", "-", ".", "5", "e", "E+", "true", "false", "null", "tr", "ue", "n", "a", "b",
        "name", " age", "\\", "\\n", "\\u", "00", "e9", "\xC3", "\xA9", "\xC3\xA9", "\xF0\x9F\x98\x80", "x\"", "\t",
        "{}", "[]", "1.5", "-0", "\":[", "\":{", "\x01\x02", "\xFF\xFE"}) {
    v.emplace_back(piece);
  }
  return v;
}

bool Has(const TokenMask& mask, int32_t token) { return MaskHas(mask, token); }

TEST(JsonConstraintTest, TheTrieWalkEqualsAScanOfEveryTokenAlongRandomGenerations) {
  auto vocab = std::make_shared<JsonVocabulary>(Vocabulary(), std::vector<int32_t>{kEos});
  std::mt19937 rng(7);
  int states = 0, finished = 0;
  for (int run = 0; run < 300; ++run) {
    JsonConstraint constraint(vocab);
    std::string text;
    for (int step = 0; step < 60; ++step) {
      const TokenMask& allowed = constraint.AllowedTokens();
      ASSERT_EQ(allowed, vocab->AllowedByScan(constraint.state())) << "after " << text;
      ++states;
      std::vector<int32_t> choices;
      for (int32_t t = 0; t < vocab->n_vocab(); ++t) {
        if (Has(allowed, t)) choices.push_back(t);
      }
      ASSERT_FALSE(choices.empty()) << "nothing continues " << text;
      const int32_t token = choices[rng() % choices.size()];
      ASSERT_TRUE(constraint.Accept(token));
      if (token == kEos) {
        ++finished;
        break;
      }
      text += vocab->token_bytes(token);
    }
  }
  EXPECT_GT(states, 3000);
  EXPECT_GT(finished, 0);
}

TEST(JsonConstraintTest, MasksFollowTheGrammar) {
  const std::vector<std::string> v = Vocabulary();
  auto index = [&](const std::string& piece) {
    return static_cast<int32_t>(std::find(v.begin(), v.end(), piece) - v.begin());
  };
  auto vocab = std::make_shared<JsonVocabulary>(v, std::vector<int32_t>{kEos});
  JsonConstraint constraint(vocab);
  const TokenMask& start = constraint.AllowedTokens();
  for (const char* ok : {"{", "{\"", " ", "\n", "{}"}) EXPECT_TRUE(Has(start, index(ok))) << ok;
  for (const char* no : {"}", "[", "\"", "1", "true", "\xC3"}) EXPECT_FALSE(Has(start, index(no))) << no;
  EXPECT_FALSE(Has(start, 0)) << "a control token";
  EXPECT_FALSE(Has(start, kEos)) << "end of generation before a document";

  ASSERT_TRUE(constraint.Accept(index("{\"")));
  ASSERT_TRUE(constraint.Accept(index("name")));
  const TokenMask& in_key = constraint.AllowedTokens();
  EXPECT_TRUE(Has(in_key, index("\":")));
  EXPECT_TRUE(Has(in_key, index("\xC3")));
  EXPECT_FALSE(Has(in_key, index("\xA9"))) << "a continuation byte without its leader";
  EXPECT_FALSE(Has(in_key, index("\x01")));
  EXPECT_FALSE(Has(in_key, index("\xFF\xFE")));
  EXPECT_FALSE(constraint.Accept(index("\x01")));
  ASSERT_TRUE(constraint.Accept(index("\":")));
  ASSERT_TRUE(constraint.Accept(index("12")));
  EXPECT_FALSE(Has(constraint.AllowedTokens(), kEos));
  ASSERT_TRUE(constraint.Accept(index("}")));
  const TokenMask& done = constraint.AllowedTokens();
  for (int32_t t = 0; t < vocab->n_vocab(); ++t) EXPECT_EQ(Has(done, t), t == kEos) << t;
  EXPECT_TRUE(constraint.Accept(kEos));
}

}  // namespace
}  // namespace bitfleet::coordinator

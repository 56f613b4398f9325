// JsonVocabulary, JsonGrammars and JsonConstraint: the trie walk's masks equal a scan of every
// token (the scalar reference) along random constrained generations, for any object and for
// schemas; the masks allow exactly what keeps the output a JSON object prefix; a constrained
// output ends as a whole document (of its schema); grammars are shared by schema text.
#include "coordinator/json_constraint.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/coordinator/json_schema_oracle.h"

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

std::shared_ptr<const JsonVocabulary> TestVocabulary() {
  return std::make_shared<JsonVocabulary>(Vocabulary(), std::vector<int32_t>{kEos});
}

// Random constrained generations of `runs` outputs, at most `steps` tokens each; every mask is
// checked against the scan. Returns the finished outputs.
std::vector<std::string> Generate(const std::shared_ptr<JsonGrammar>& grammar, int runs, int steps, int* states) {
  const JsonVocabulary& vocab = grammar->vocabulary();
  std::mt19937 rng(7);
  std::vector<std::string> finished;
  for (int run = 0; run < runs; ++run) {
    JsonConstraint constraint(grammar);
    std::string text;
    for (int step = 0; step < steps; ++step) {
      const TokenMask& allowed = constraint.AllowedTokens();
      EXPECT_EQ(allowed, vocab.AllowedByScan(constraint.state())) << "after " << text;
      ++*states;
      std::vector<int32_t> choices;
      for (int32_t t = 0; t < vocab.n_vocab(); ++t) {
        if (Has(allowed, t)) choices.push_back(t);
      }
      EXPECT_FALSE(choices.empty()) << "nothing continues " << text;
      if (choices.empty()) break;
      // The end as soon as it is allowed, half of the time: outputs finish.
      int32_t token = choices[rng() % choices.size()];
      if (Has(allowed, kEos) && rng() % 2 == 0) token = kEos;
      EXPECT_TRUE(constraint.Accept(token));
      if (token == kEos) {
        EXPECT_TRUE(constraint.Complete());
        finished.push_back(text);
        break;
      }
      text += vocab.token_bytes(token);
    }
  }
  return finished;
}

TEST(JsonConstraintTest, TheTrieWalkEqualsAScanOfEveryTokenAlongRandomGenerations) {
  JsonGrammars grammars(TestVocabulary());
  int states = 0;
  const std::vector<std::string> finished = Generate(grammars.AnyObject(), 300, 60, &states);
  EXPECT_GT(states, 3000);
  EXPECT_GT(finished.size(), 0u);
}

// With schemas: the walk still equals the scan, and what finishes validates.
TEST(JsonConstraintTest, SchemaOutputsValidate) {
  JsonGrammars grammars(TestVocabulary());
  const char* schemas[] = {
      R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 4}, "age": {"type": "integer"},)"
      R"( "tags": {"type": "array", "items": {"enum": ["a", "b", 12]}, "maxItems": 2}}, "required": ["name", "age"]})",
      R"({"type": "array", "items": {"type": ["number", "null"]}, "minItems": 1})",
      R"({"anyOf": [{"type": "integer"}, {"type": "boolean"}]})",
      "{}",
  };
  for (const char* text : schemas) {
    StatusOr<std::shared_ptr<JsonGrammar>> grammar = grammars.ForSchema(text);
    ASSERT_TRUE(grammar.ok()) << grammar.status();
    int states = 0;
    const std::vector<std::string> finished = Generate(*grammar, 150, 80, &states);
    EXPECT_GT(finished.size(), 20u) << text;
    for (const std::string& doc : finished) EXPECT_TRUE(testing::ValidatesAgainst(doc, text)) << text << "\n" << doc;
  }
}

TEST(JsonConstraintTest, GrammarsAreSharedBySchemaTextAndRefusalsNamed) {
  JsonGrammars grammars(TestVocabulary());
  const std::string schema = R"({"type": "integer"})";
  StatusOr<std::shared_ptr<JsonGrammar>> a = grammars.ForSchema(schema);
  StatusOr<std::shared_ptr<JsonGrammar>> b = grammars.ForSchema(schema);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(grammars.AnyObject().get(), grammars.AnyObject().get());
  // Past kMaxSchemas others, the first is compiled again.
  for (size_t i = 0; i < JsonGrammars::kMaxSchemas; ++i) {
    ASSERT_TRUE(grammars.ForSchema(R"({"const": )" + std::to_string(i) + "}").ok());
  }
  StatusOr<std::shared_ptr<JsonGrammar>> c = grammars.ForSchema(schema);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->get(), c->get());
  StatusOr<std::shared_ptr<JsonGrammar>> bad = grammars.ForSchema(R"({"type": "string", "pattern": "x"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

// A top-level number is complete while it may still go on: the end is allowed beside digits.
TEST(JsonConstraintTest, ATopLevelNumberMayEndOrGoOn) {
  const std::vector<std::string> v = Vocabulary();
  auto index = [&](const std::string& piece) {
    return static_cast<int32_t>(std::find(v.begin(), v.end(), piece) - v.begin());
  };
  JsonGrammars grammars(TestVocabulary());
  StatusOr<std::shared_ptr<JsonGrammar>> grammar = grammars.ForSchema(R"({"type": "integer"})");
  ASSERT_TRUE(grammar.ok());
  JsonConstraint constraint(*grammar);
  EXPECT_FALSE(Has(constraint.AllowedTokens(), kEos));
  ASSERT_TRUE(constraint.Accept(index("12")));
  const TokenMask& allowed = constraint.AllowedTokens();
  EXPECT_TRUE(Has(allowed, kEos));
  EXPECT_TRUE(Has(allowed, index("5")));
  EXPECT_FALSE(Has(allowed, index("1.5")));
  EXPECT_FALSE(Has(allowed, index(" ")));
}

TEST(JsonConstraintTest, MasksFollowTheGrammar) {
  const std::vector<std::string> v = Vocabulary();
  auto index = [&](const std::string& piece) {
    return static_cast<int32_t>(std::find(v.begin(), v.end(), piece) - v.begin());
  };
  auto vocab = std::make_shared<JsonVocabulary>(v, std::vector<int32_t>{kEos});
  JsonGrammars grammars(vocab);
  JsonConstraint constraint(grammars.AnyObject());
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

// Call or text (tool_choice auto): undecided while only whitespace came, then free text or the
// grammar's value, by the first byte.
TEST(JsonConstraintTest, JsonOrTextFollowsTheFirstByte) {
  const std::vector<std::string> v = Vocabulary();
  auto index = [&](const std::string& piece) {
    return static_cast<int32_t>(std::find(v.begin(), v.end(), piece) - v.begin());
  };
  JsonGrammars grammars(TestVocabulary());
  StatusOr<std::shared_ptr<JsonGrammar>> grammar =
      grammars.ForSchema(R"({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})");
  ASSERT_TRUE(grammar.ok());

  JsonOrTextConstraint text(*grammar);
  const TokenMask& start = text.AllowedTokens();
  for (const char* ok : {"{\"", "{", " ", "\n", "name", " age", "true", "1", "\xC3", "}", "[{"}) {
    EXPECT_TRUE(Has(start, index(ok))) << ok;
  }
  EXPECT_FALSE(Has(start, index("{}"))) << "begins like the value, which cannot go on so";
  EXPECT_FALSE(Has(start, kEos)) << "an empty answer";
  EXPECT_FALSE(Has(start, 0)) << "a control token";
  EXPECT_FALSE(text.Complete());
  ASSERT_TRUE(text.Accept(index("\n")));  // still undecided
  EXPECT_FALSE(text.json());
  EXPECT_FALSE(Has(text.AllowedTokens(), index("{}")));
  ASSERT_TRUE(text.Accept(index(" age")));  // text
  EXPECT_TRUE(text.Complete());
  for (int32_t t = 0; t < static_cast<int32_t>(v.size()); ++t) EXPECT_TRUE(Has(text.AllowedTokens(), t)) << t;
  EXPECT_TRUE(text.Accept(index("{}")));

  JsonOrTextConstraint call(*grammar);
  ASSERT_TRUE(call.Accept(index(" ")));
  ASSERT_TRUE(call.Accept(index("{\"")));
  EXPECT_TRUE(call.json());
  EXPECT_FALSE(call.Complete());
  EXPECT_FALSE(Has(call.AllowedTokens(), index("age"))) << "the grammar's keys only";
  EXPECT_TRUE(Has(call.AllowedTokens(), index("name")));
  EXPECT_FALSE(call.Accept(index("a")));
}

}  // namespace
}  // namespace bitfleet::coordinator

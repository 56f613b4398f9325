// Validation of Generate requests before scheduling (DESIGN.md §9): every bad field gives
// INVALID_ARGUMENT (NOT_FOUND for another model) with a message naming it.
#include "coordinator/api_request.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::coordinator {
namespace {

using tokenizer::testing::MakeSpmVocab;
using tokenizer::testing::MakeTokenizer;

class ApiRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = MakeTokenizer(MakeSpmVocab());
    limits_.model_name = "tiny";
    limits_.n_vocab = static_cast<int32_t>(tokenizer_->size());
    limits_.max_context = 32;
  }

  v1::GenerateRequest Tokens(std::initializer_list<int32_t> ids, uint32_t max_tokens = 4) {
    v1::GenerateRequest r;
    for (int32_t id : ids) r.mutable_prompt_tokens()->add_ids(id);
    r.set_max_tokens(max_tokens);
    return r;
  }

  // Expects `code` and a message containing `part`.
  void ExpectError(const v1::GenerateRequest& r, absl::StatusCode code, const std::string& part) {
    auto parsed = ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 7);
    ASSERT_FALSE(parsed.ok()) << r.ShortDebugString();
    EXPECT_EQ(parsed.status().code(), code) << parsed.status();
    EXPECT_NE(std::string(parsed.status().message()).find(part), std::string::npos) << parsed.status();
  }

  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  ApiLimits limits_;
};

TEST_F(ApiRequestTest, TextPromptIsTokenizedWithDefaults) {
  v1::GenerateRequest r;
  r.set_prompt("hello world");
  r.set_max_tokens(5);
  r.add_stop("\n");
  auto parsed = ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 42);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto expected = tokenizer_->Encode("hello world");
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(parsed->request.prompt, *expected);
  EXPECT_EQ(parsed->request.max_tokens, 5);
  EXPECT_EQ(parsed->stop, std::vector<std::string>{"\n"});
  const StepSampling& s = parsed->request.sampling;
  EXPECT_EQ(s.temperature, 1.0f);
  EXPECT_EQ(s.top_k, 0);
  EXPECT_EQ(s.top_p, 1.0f);
  EXPECT_EQ(s.penalty_last_n, 64);
  EXPECT_EQ(s.seed, 42u);  // the server's seed when none is given
}

TEST_F(ApiRequestTest, ExplicitSamplingValuesWin) {
  v1::GenerateRequest r = Tokens({1, 5});
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_top_k(3);
  r.mutable_sampling()->set_seed(9);
  auto parsed = ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 42);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->request.sampling.temperature, 0.0f);
  EXPECT_EQ(parsed->request.sampling.top_k, 3);
  EXPECT_EQ(parsed->request.sampling.seed, 9u);
  EXPECT_EQ(parsed->request.prompt, (std::vector<int32_t>{1, 5}));
}

TEST_F(ApiRequestTest, LogitBiasComesInTokenOrderAndWithinTheVocabulary) {
  v1::GenerateRequest r = Tokens({1, 5});
  auto& bias = *r.mutable_sampling()->mutable_logit_bias();
  for (int32_t token : {9, 2, 7, 0}) bias[token] = static_cast<float>(token) - 4.0f;
  auto parsed = ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 42);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const std::vector<TokenBias> want = {{0, -4.0f}, {2, -2.0f}, {7, 3.0f}, {9, 5.0f}};
  EXPECT_EQ(parsed->request.sampling.logit_bias, want);

  v1::GenerateRequest outside = Tokens({1});
  (*outside.mutable_sampling()->mutable_logit_bias())[limits_.n_vocab] = 1.0f;
  ExpectError(outside, absl::StatusCode::kInvalidArgument, "logit_bias token");
  v1::GenerateRequest negative = Tokens({1});
  (*negative.mutable_sampling()->mutable_logit_bias())[-3] = 1.0f;
  ExpectError(negative, absl::StatusCode::kInvalidArgument, "logit_bias token -3");
  v1::GenerateRequest too_big = Tokens({1});
  (*too_big.mutable_sampling()->mutable_logit_bias())[4] = 100.5f;
  ExpectError(too_big, absl::StatusCode::kInvalidArgument, "must be in [-100, 100]");
  v1::GenerateRequest too_many = Tokens({1});
  for (int32_t t = 0; t <= kMaxLogitBias; ++t) (*too_many.mutable_sampling()->mutable_logit_bias())[t] = 1.0f;
  ExpectError(too_many, absl::StatusCode::kInvalidArgument, "at most 1024");
}

TEST_F(ApiRequestTest, ZeroMaxTokensMeansTheRestOfTheContext) {
  auto parsed = ParseGenerateRequest(Tokens({1, 5, 6}, 0), limits_, *tokenizer_, nullptr, 1);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->request.max_tokens, 32 - 3);
}

TEST_F(ApiRequestTest, UnknownModelIsNotFound) {
  v1::GenerateRequest r = Tokens({1});
  r.set_model("other");
  ExpectError(r, absl::StatusCode::kNotFound, "other");
  r.set_model("tiny");
  EXPECT_TRUE(ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 1).ok());
}

TEST_F(ApiRequestTest, MissingOrEmptyPrompt) {
  v1::GenerateRequest none;
  ExpectError(none, absl::StatusCode::kInvalidArgument, "no prompt");
  v1::GenerateRequest empty_text;
  empty_text.set_prompt("");
  ExpectError(empty_text, absl::StatusCode::kInvalidArgument, "empty prompt");
  v1::GenerateRequest empty_ids;
  empty_ids.mutable_prompt_tokens();
  ExpectError(empty_ids, absl::StatusCode::kInvalidArgument, "empty prompt");
}

TEST_F(ApiRequestTest, OverLongPrompts) {
  v1::GenerateRequest bytes;
  bytes.set_prompt(std::string(limits_.max_prompt_bytes + 1, 'a'));
  ExpectError(bytes, absl::StatusCode::kInvalidArgument, "bytes");
  v1::GenerateRequest tokens;
  for (int i = 0; i < 40; ++i) tokens.mutable_prompt_tokens()->add_ids(5);
  ExpectError(tokens, absl::StatusCode::kInvalidArgument, "context");
  // A prompt that fills the whole context leaves no room to generate.
  v1::GenerateRequest full;
  for (int i = 0; i < 32; ++i) full.mutable_prompt_tokens()->add_ids(5);
  ExpectError(full, absl::StatusCode::kInvalidArgument, "context");
}

TEST_F(ApiRequestTest, TokenIdsOutsideTheVocabulary) {
  ExpectError(Tokens({1, -1}), absl::StatusCode::kInvalidArgument, "prompt_tokens[1]");
  ExpectError(Tokens({limits_.n_vocab}), absl::StatusCode::kInvalidArgument, "vocabulary");
}

TEST_F(ApiRequestTest, PromptPlusMaxTokensBeyondContext) {
  ExpectError(Tokens({1, 2, 3}, 30), absl::StatusCode::kInvalidArgument, "exceeds the context");
  EXPECT_TRUE(ParseGenerateRequest(Tokens({1, 2, 3}, 29), limits_, *tokenizer_, nullptr, 1).ok());
  ExpectError(Tokens({1}, 1000000), absl::StatusCode::kInvalidArgument, "max_tokens");
}

TEST_F(ApiRequestTest, StopStrings) {
  v1::GenerateRequest many = Tokens({1});
  for (int i = 0; i <= limits_.max_stop_strings; ++i) many.mutable_stop()->Add()->push_back('x');
  ExpectError(many, absl::StatusCode::kInvalidArgument, "stop strings");
  v1::GenerateRequest empty = Tokens({1});
  empty.add_stop(std::string());
  ExpectError(empty, absl::StatusCode::kInvalidArgument, "stop[0] is empty");
  v1::GenerateRequest longer = Tokens({1});
  longer.add_stop(std::string("ok"));
  longer.add_stop(std::string(limits_.max_stop_bytes + 1, 's'));
  ExpectError(longer, absl::StatusCode::kInvalidArgument, "stop[1]");
  v1::GenerateRequest bad_utf8 = Tokens({1});
  bad_utf8.add_stop(std::string(1, '\xC3'));
  ExpectError(bad_utf8, absl::StatusCode::kInvalidArgument, "UTF-8");
}

TEST_F(ApiRequestTest, SamplingValuesMustBeFiniteAndInRange) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* field;
    void (*set)(v1::SamplingParams*, float);
    float value;
  };
  const Case cases[] = {
      {"temperature", [](v1::SamplingParams* p, float v) { p->set_temperature(v); }, nan},
      {"temperature", [](v1::SamplingParams* p, float v) { p->set_temperature(v); }, -0.5f},
      {"temperature", [](v1::SamplingParams* p, float v) { p->set_temperature(v); }, 101.0f},
      {"top_p", [](v1::SamplingParams* p, float v) { p->set_top_p(v); }, 0.0f},
      {"top_p", [](v1::SamplingParams* p, float v) { p->set_top_p(v); }, inf},
      {"min_p", [](v1::SamplingParams* p, float v) { p->set_min_p(v); }, 1.5f},
      {"repeat_penalty", [](v1::SamplingParams* p, float v) { p->set_repeat_penalty(v); }, 0.0f},
      {"presence_penalty", [](v1::SamplingParams* p, float v) { p->set_presence_penalty(v); }, -inf},
      {"frequency_penalty", [](v1::SamplingParams* p, float v) { p->set_frequency_penalty(v); }, 2.5f},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = Tokens({1});
    c.set(r.mutable_sampling(), c.value);
    ExpectError(r, absl::StatusCode::kInvalidArgument, c.field);
  }
  v1::GenerateRequest top_k = Tokens({1});
  top_k.mutable_sampling()->set_top_k(-1);
  ExpectError(top_k, absl::StatusCode::kInvalidArgument, "top_k");
  v1::GenerateRequest last_n = Tokens({1});
  last_n.mutable_sampling()->set_penalty_last_n(-2);
  ExpectError(last_n, absl::StatusCode::kInvalidArgument, "penalty_last_n");
}

// response_format: JSON_SCHEMA needs a schema the compiler takes (its refusal is passed on), a
// schema needs JSON_SCHEMA, neither JSON format goes with ignore_eos, and a server without
// grammars refuses both.
TEST_F(ApiRequestTest, ResponseFormats) {
  v1::GenerateRequest r = Tokens({1, 2});
  r.set_response_format(v1::RESPONSE_FORMAT_JSON_OBJECT);
  ExpectError(r, absl::StatusCode::kUnimplemented, "response_format JSON_OBJECT is not available");
  std::vector<std::string> bytes = {"", "</s>"};
  for (int b = 1; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
  limits_.json_grammars =
      std::make_shared<JsonGrammars>(std::make_shared<JsonVocabulary>(bytes, std::vector<int32_t>{1}));
  auto object = ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 7);
  ASSERT_TRUE(object.ok()) << object.status();
  ASSERT_NE(object->request.constraint, nullptr);
  EXPECT_TRUE(MaskHas(object->request.constraint->AllowedTokens(), 2 + '{' - 1));
  EXPECT_FALSE(MaskHas(object->request.constraint->AllowedTokens(), 2 + '[' - 1));

  r.set_response_format(v1::RESPONSE_FORMAT_JSON_SCHEMA);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "response_format JSON_SCHEMA needs json_schema");
  r.set_json_schema(R"({"type": "array"})");
  auto schema = ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 7);
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_TRUE(MaskHas(schema->request.constraint->AllowedTokens(), 2 + '[' - 1));
  EXPECT_FALSE(MaskHas(schema->request.constraint->AllowedTokens(), 2 + '{' - 1));
  r.set_json_schema(R"({"type": "string", "pattern": "x"})");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "json_schema at #: 'pattern' is not supported");
  // A value or text: '[' begins the value; 'x' text.
  r.set_response_format(v1::RESPONSE_FORMAT_JSON_SCHEMA_OR_TEXT);
  r.set_json_schema(R"({"type": "array"})");
  auto or_text = ParseGenerateRequest(r, limits_, *tokenizer_, nullptr, 7);
  ASSERT_TRUE(or_text.ok()) << or_text.status();
  EXPECT_TRUE(MaskHas(or_text->request.constraint->AllowedTokens(), 2 + '[' - 1));
  EXPECT_TRUE(MaskHas(or_text->request.constraint->AllowedTokens(), 2 + 'x' - 1));
  EXPECT_FALSE(MaskHas(or_text->request.constraint->AllowedTokens(), 1)) << "end of generation before an answer";
  r.clear_json_schema();
  ExpectError(r, absl::StatusCode::kInvalidArgument, "response_format JSON_SCHEMA_OR_TEXT needs json_schema");
  r.set_response_format(v1::RESPONSE_FORMAT_JSON_SCHEMA);
  r.set_json_schema(R"({"type": "array"})");
  r.set_ignore_eos(true);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "JSON_SCHEMA ends with end-of-generation: not with ignore_eos");
  r.set_ignore_eos(false);
  r.set_response_format(v1::RESPONSE_FORMAT_TEXT);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "json_schema is given, but response_format is not JSON_SCHEMA");
  r.clear_json_schema();
  r.set_response_format(static_cast<v1::ResponseFormat>(9));
  ExpectError(r, absl::StatusCode::kInvalidArgument, "unknown response_format 9");
}

}  // namespace
}  // namespace bitfleet::coordinator

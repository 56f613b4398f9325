// Completions' "echo" over the fake replica: the prompt's text before the completion and, with
// "logprobs", the prompt's tokens before the completion's, the first unscored (null) and the
// others with the fake's score for their context (FakePromptLogprob, passed through unchanged);
// "max_tokens": 0 answers with the prompt alone. Streamed chunks join to the same answer.
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/http_api_fixture.h"

namespace bitfleet::coordinator {
namespace {

using Json = nlohmann::json;

class HttpApiEchoTest : public HttpApiTest {
 protected:
  std::vector<int32_t> Tokenize(const std::string& text) {
    auto response = Post("/tokenize", Json{{"prompt", text}}.dump());
    EXPECT_TRUE(response && response->status == 200);
    return response ? Json::parse(response->body)["tokens"].get<std::vector<int32_t>>() : std::vector<int32_t>{};
  }

  // A streamed answer's chunks joined: (text, legacy logprobs fields concatenated, last chunk).
  struct Joined {
    std::string text;
    Json tokens = Json::array();
    Json token_logprobs = Json::array();
    Json text_offset = Json::array();
    Json last;
  };
  // `request` (a JSON object without its closing brace) streamed, its chunks joined.
  Joined Streamed(const std::string& request) {
    auto response = Post("/v1/completions", request + R"(, "stream": true})");
    EXPECT_TRUE(response && response->status == 200) << (response ? response->body : "no response");
    return response ? JoinChunks(response->body) : Joined{};
  }
  static Joined JoinChunks(const std::string& body) {
    Joined out;
    for (size_t at = 0; (at = body.find("data: {", at)) != std::string::npos;) {
      const size_t end = body.find("\n\n", at);
      const Json chunk = Json::parse(body.substr(at + 6, end - at - 6));
      const Json& choice = chunk["choices"][0];
      out.text += choice["text"].get<std::string>();
      if (!choice["logprobs"].is_null()) {
        for (auto [field, into] : {std::pair{"tokens", &out.tokens}, std::pair{"token_logprobs", &out.token_logprobs},
                                   std::pair{"text_offset", &out.text_offset}}) {
          for (const Json& v : choice["logprobs"][field]) into->push_back(v);
        }
      }
      out.last = chunk;
      at = end;
    }
    return out;
  }
};

TEST_F(HttpApiEchoTest, EchoPutsThePromptAndItsScoresBeforeTheCompletion) {
  const std::string prompt = "Hello world, once upon a time";
  const std::vector<int32_t> ids = Tokenize(prompt);
  ASSERT_GE(ids.size(), 3u);
  const auto [completion, completion_tokens] = GrpcAnswer(prompt, 4);
  ASSERT_EQ(completion_tokens, 4u);

  const std::string request = absl::StrCat(R"({"prompt": ")", prompt, R"(", "max_tokens": 4, "temperature": 0,
      "echo": true, "logprobs": 1)");
  auto response = Post("/v1/completions", request + "}");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const Json body = Json::parse(response->body);
  const Json& choice = body["choices"][0];
  EXPECT_EQ(choice["text"], prompt + completion);
  const Json& logprobs = choice["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), ids.size() + 4) << logprobs.dump();
  EXPECT_TRUE(logprobs["token_logprobs"][0].is_null());
  EXPECT_TRUE(logprobs["top_logprobs"][0].is_null());
  EXPECT_EQ(logprobs["text_offset"][0], 0);
  for (size_t t = 1; t < ids.size(); ++t) {
    const float want = testing::FakePromptLogprob(std::span<const int32_t>(ids.data(), t), ids[t]);
    EXPECT_EQ(logprobs["token_logprobs"][t].get<double>(), want) << t;
    EXPECT_EQ(logprobs["top_logprobs"][t][logprobs["tokens"][t].get<std::string>()].get<double>(), want) << t;
  }
  for (size_t i = ids.size(); i < ids.size() + 4; ++i) EXPECT_LE(logprobs["token_logprobs"][i].get<double>(), 0.0);
  EXPECT_EQ(body["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

  const Joined joined = Streamed(request);
  EXPECT_EQ(joined.text, choice["text"]);
  EXPECT_EQ(joined.tokens, logprobs["tokens"]);
  EXPECT_EQ(joined.token_logprobs, logprobs["token_logprobs"]);
  EXPECT_EQ(joined.text_offset, logprobs["text_offset"]);

  // Without logprobs: the text alone.
  auto plain = Post("/v1/completions", absl::StrCat(R"({"prompt": ")", prompt,
                                                     R"(", "max_tokens": 4, "temperature": 0, "echo": true})"));
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200) << plain->body;
  EXPECT_EQ(Json::parse(plain->body)["choices"][0]["text"], prompt + completion);
  EXPECT_TRUE(Json::parse(plain->body)["choices"][0]["logprobs"].is_null());
}

TEST_F(HttpApiEchoTest, MaxTokensZeroAnswersWithThePromptAlone) {
  const std::vector<int32_t> ids = {5, 9, 13, 17, 21, 25};
  const std::string request = R"({"prompt": [5, 9, 13, 17, 21, 25], "max_tokens": 0, "echo": true, "logprobs": 2)";
  auto response = Post("/v1/completions", request + "}");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const Json body = Json::parse(response->body);
  const Json& choice = body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["completion_tokens"], 0);
  EXPECT_EQ(body["usage"]["prompt_tokens"], ids.size());
  const Json& logprobs = choice["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), ids.size());
  auto detokenized = Post("/detokenize", Json{{"tokens", ids}}.dump());
  ASSERT_TRUE(detokenized && detokenized->status == 200);
  EXPECT_EQ(choice["text"], Json::parse(detokenized->body)["prompt"]);
  for (size_t t = 1; t < ids.size(); ++t) {
    EXPECT_EQ(logprobs["token_logprobs"][t].get<double>(),
              testing::FakePromptLogprob(std::span<const int32_t>(ids.data(), t), ids[t]));
    EXPECT_GE(logprobs["top_logprobs"][t].size(), 2u);
  }

  const Joined joined = Streamed(request);
  EXPECT_EQ(joined.text, choice["text"]);
  EXPECT_EQ(joined.token_logprobs, logprobs["token_logprobs"]);
  EXPECT_EQ(joined.last["choices"][0]["finish_reason"], "length");

  auto refused = Post("/v1/completions", R"({"prompt": "x", "max_tokens": 0})");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400);
  EXPECT_NE(refused->body.find(R"(0 only with \"echo\": true)"), std::string::npos) << refused->body;
}

}  // namespace
}  // namespace bitfleet::coordinator

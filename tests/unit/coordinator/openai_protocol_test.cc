// The OpenAI-compatible API's translation: request bodies into GenerateRequest (defaults, field
// mapping, every refusal) and the response bodies read back as JSON.
#include "coordinator/openai_protocol.h"

#include <functional>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "coordinator/json_grammar.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bitfleet::coordinator {
namespace {

using Json = nlohmann::json;

StatusOr<OpenAiRequest> Completion(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, body);
}
StatusOr<OpenAiRequest> Chat(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body);
}

// INVALID_ARGUMENT whose message contains `words`.
void ExpectRefused(const StatusOr<OpenAiRequest>& parsed, const std::string& words) {
  ASSERT_FALSE(parsed.ok()) << "accepted; expected a refusal mentioning " << words;
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_NE(std::string(parsed.status().message()).find(words), std::string::npos) << parsed.status();
}

TEST(OpenAiRequestTest, CompletionDefaultsAreOpenAis) {
  auto parsed = Completion(R"({"model": "m", "prompt": "Hello"})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->generate().model(), "m");
  EXPECT_EQ(parsed->generate().prompt(), "Hello");
  EXPECT_EQ(parsed->generate().max_tokens(), 16u);
  EXPECT_FALSE(parsed->generate().sampling().has_temperature());  // the server's default, 1.0
  EXPECT_FALSE(parsed->generate().sampling().has_seed());
  EXPECT_FALSE(parsed->generate().ignore_eos());
  EXPECT_FALSE(parsed->stream);
  EXPECT_FALSE(parsed->include_usage);
}

TEST(OpenAiRequestTest, PromptsAsTextTokenIdsOrABatch) {
  auto ids = Completion(R"({"prompt": [1, 2, 3]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(ids->generate().has_prompt_tokens());
  EXPECT_EQ(ids->generate().prompt_tokens().ids_size(), 3);
  EXPECT_EQ(ids->generate().prompt_tokens().ids(2), 3);

  auto one_text = Completion(R"({"prompt": ["Hi"]})");
  ASSERT_TRUE(one_text.ok()) << one_text.status();
  EXPECT_EQ(one_text->generate().prompt(), "Hi");
  auto one_ids = Completion(R"({"prompt": [[7, 8]]})");
  ASSERT_TRUE(one_ids.ok()) << one_ids.status();
  EXPECT_EQ(one_ids->generate().prompt_tokens().ids_size(), 2);

  // A batch: one choice per prompt, n each, in prompt order; choice j of a seed uses seed + j.
  auto batch = Completion(R"({"prompt": ["a", [5, 6]], "n": 2, "seed": 10, "max_tokens": 3})");
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->choices.size(), 4u);
  EXPECT_EQ(batch->n, 2);
  EXPECT_EQ(batch->choices[1].prompt(), "a");
  EXPECT_EQ(batch->choices[2].prompt_tokens().ids(1), 6);
  EXPECT_EQ(batch->choices[0].sampling().seed(), 10u);
  EXPECT_EQ(batch->choices[1].sampling().seed(), 11u);
  EXPECT_EQ(batch->choices[2].sampling().seed(), 10u);
  EXPECT_EQ(batch->choices[3].max_tokens(), 3u);
  auto unseeded = Completion(R"({"prompt": "a", "n": 2})");
  ASSERT_TRUE(unseeded.ok());
  EXPECT_FALSE(unseeded->choices[1].sampling().has_seed());  // the server picks one per choice
  ExpectRefused(Completion(R"({"prompt": ["a", 5]})"), "'prompt[1]'");
  ExpectRefused(Completion(R"({"prompt": ["a", []]})"), "'prompt[1]' is empty");
  ExpectRefused(Completion(R"({"prompt": "a", "n": 0})"), "'n' must be at least 1");
  ExpectRefused(Completion(R"({"prompt": ["a", "b", "c"], "n": 22})"), "66 choices");
  ExpectRefused(Completion(R"({"prompt": "a", "n": 2, "best_of": 3})"), "'best_of'");
  EXPECT_TRUE(Completion(R"({"prompt": "a", "n": 2, "best_of": 2})").ok());
  ExpectRefused(Completion(R"({"prompt": []})"), "empty");
  ExpectRefused(Completion(R"({"prompt": [1, -2]})"), "token id");
  ExpectRefused(Completion(R"({"prompt": [1, 2.5]})"), "token ids");
  ExpectRefused(Completion(R"({"prompt": 5})"), "prompt");
  ExpectRefused(Completion(R"({"max_tokens": 3})"), "'prompt' is required");
}

TEST(OpenAiRequestTest, SamplingFieldsMapOntoTheServersOwn) {
  auto parsed = Completion(R"({"prompt": "x", "temperature": 0, "top_p": 0.5, "top_k": -1, "min_p": 0.1,
      "presence_penalty": 0.25, "frequency_penalty": -0.5, "repetition_penalty": 1.1, "seed": 18446744073709551615,
      "max_tokens": 7, "stop": ["a", "bc"], "ignore_eos": true, "user": "ignored", "unknown_field": {"x": 1}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::SamplingParams& s = parsed->generate().sampling();
  ASSERT_TRUE(s.has_temperature());
  EXPECT_EQ(s.temperature(), 0.0f);
  EXPECT_EQ(s.top_p(), 0.5f);
  ASSERT_TRUE(s.has_top_k());
  EXPECT_EQ(s.top_k(), 0);  // vLLM's -1 = off
  EXPECT_EQ(s.min_p(), 0.1f);
  EXPECT_EQ(s.presence_penalty(), 0.25f);
  EXPECT_EQ(s.frequency_penalty(), -0.5f);
  EXPECT_EQ(s.repeat_penalty(), 1.1f);
  EXPECT_EQ(s.seed(), 18446744073709551615ull);
  EXPECT_EQ(parsed->generate().max_tokens(), 7u);
  ASSERT_EQ(parsed->generate().stop_size(), 2);
  EXPECT_EQ(parsed->generate().stop(1), "bc");
  EXPECT_TRUE(parsed->generate().ignore_eos());

  auto single_stop = Completion(R"({"prompt": "x", "stop": "\n", "top_k": 40})");
  ASSERT_TRUE(single_stop.ok()) << single_stop.status();
  ASSERT_EQ(single_stop->generate().stop_size(), 1);
  EXPECT_EQ(single_stop->generate().stop(0), "\n");
  EXPECT_EQ(single_stop->generate().sampling().top_k(), 40);

  // Nulls are unset fields.
  auto nulls = Completion(R"({"prompt": "x", "temperature": null, "stop": null, "max_tokens": null, "n": null})");
  ASSERT_TRUE(nulls.ok()) << nulls.status();
  EXPECT_FALSE(nulls->generate().sampling().has_temperature());
  EXPECT_EQ(nulls->generate().max_tokens(), 16u);
}

TEST(OpenAiRequestTest, LogitBiasMapsTokenIdsToBiases) {
  auto parsed = Completion(R"({"prompt": "x", "logit_bias": {"50256": -100, "7": 2.5, "0": 100}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& bias = parsed->generate().sampling().logit_bias();
  ASSERT_EQ(bias.size(), 3u);
  EXPECT_EQ(bias.at(50256), -100.0f);
  EXPECT_EQ(bias.at(7), 2.5f);
  EXPECT_EQ(bias.at(0), 100.0f);
  EXPECT_TRUE(Chat(R"({"messages": [], "logit_bias": {"12": -1}})").ok());
  EXPECT_TRUE(Completion(R"({"prompt": "x", "logit_bias": null})").ok());
  EXPECT_TRUE(Completion(R"({"prompt": "x", "logit_bias": {}})").ok());
  // Ranges and the vocabulary are the request validation's (ApiRequestTest); the shape is here.
  ExpectRefused(Completion(R"({"prompt": "x", "logit_bias": {"a": 1}})"), "key 'a' is not a token id");
  ExpectRefused(Completion(R"({"prompt": "x", "logit_bias": {"5 ": 1}})"), "key '5 ' is not a token id");
  ExpectRefused(Completion(R"({"prompt": "x", "logit_bias": {"99999999999": 1}})"), "is not a token id");
  ExpectRefused(Completion(R"({"prompt": "x", "logit_bias": {"5": "up"}})"), "value of token 5 must be a number");
  ExpectRefused(Completion(R"({"prompt": "x", "logit_bias": {"5": 1e39}})"), "value of token 5 is out of range");
  ExpectRefused(Completion(R"({"prompt": "x", "logit_bias": {"5": 1, "05": 2}})"), "token 5 is given twice");
  ExpectRefused(Completion(R"({"prompt": "x", "logit_bias": [5]})"), "'logit_bias' must be an object");
}

TEST(OpenAiRequestTest, ResponseFormatJsonObjectOnBothEndpoints) {
  auto chat = Chat(R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->generate().response_format(), v1::RESPONSE_FORMAT_JSON_OBJECT);
  auto completion = Completion(R"({"prompt": "x", "response_format": {"type": "json_object"}})");
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(completion->generate().response_format(), v1::RESPONSE_FORMAT_JSON_OBJECT);
  auto text = Completion(R"({"prompt": "x", "response_format": {"type": "text"}})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->generate().response_format(), v1::RESPONSE_FORMAT_TEXT);
}

// json_schema: the schema goes on as JSON text in the client's key order (properties are
// generated in that order), whatever order the body's parse keeps.
TEST(OpenAiRequestTest, ResponseFormatJsonSchemaKeepsTheSchemasKeyOrder) {
  auto chat = Chat(R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema",
      "json_schema": {"name": "person", "strict": true, "schema": {"type": "object",
      "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}, "required": ["zeta", "alpha"]}}}})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->generate().response_format(), v1::RESPONSE_FORMAT_JSON_SCHEMA);
  EXPECT_EQ(chat->generate().json_schema(),
            R"({"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}},)"
            R"("required":["zeta","alpha"]})");
  EXPECT_FALSE(chat->generate().json_schema_best_effort()) << "strict: true";
  auto lenient = Chat(R"({"messages": [], "response_format": {"type": "json_schema",
      "json_schema": {"name": "n", "schema": {"type": "string"}}}})");
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  EXPECT_TRUE(lenient->generate().json_schema_best_effort()) << "OpenAI's default: not strict";
  auto no_schema =
      Completion(R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a"}}})");
  ASSERT_TRUE(no_schema.ok()) << no_schema.status();
  EXPECT_EQ(no_schema->generate().json_schema(), "{}");  // any JSON value
  ExpectRefused(Chat(R"({"messages": [], "response_format": {"type": "json_schema"}})"),
                "of type json_schema needs a 'json_schema' object");
  ExpectRefused(Chat(R"({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": 3}}})"),
                "'json_schema.name' must be a string");
  ExpectRefused(Chat(R"({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"strict": 1}}})"),
                "'json_schema.strict' must be true or false");
}

// Tools: a call becomes a json_schema constraint (or, under "auto", a call-or-text one) and a
// system message listing the functions; earlier calls and tool results go back into the chat.
TEST(OpenAiRequestTest, ForcedToolCallsConstrainTheAnswer) {
  const std::string tools = R"("tools": [
      {"type": "function", "function": {"name": "weather", "description": "Weather in a city",
       "parameters": {"type": "object", "properties": {"zcity": {"type": "string"}, "aunit": {"$ref": "#/$defs/u"}},
                      "required": ["zcity"], "$defs": {"u": {"enum": ["c", "f"]}}}}},
      {"type": "function", "function": {"name": "now"}}])";
  auto required =
      Chat(R"({"messages": [{"role": "user", "content": "hi"}], )" + tools + R"(, "tool_choice": "required"})");
  ASSERT_TRUE(required.ok()) << required.status();
  ASSERT_TRUE(required->tools.has_value());
  EXPECT_FALSE(required->tools->named);
  EXPECT_FALSE(required->tools->parallel) << "off unless asked for";
  EXPECT_TRUE(required->generate().json_schema_best_effort()) << "no function is strict";
  const v1::GenerateRequest& generate = required->generate();
  EXPECT_EQ(generate.response_format(), v1::RESPONSE_FORMAT_JSON_SCHEMA);
  EXPECT_EQ(generate.json_schema(),
            R"({"anyOf":[{"type":"object","properties":{"name":{"const":"weather"},"arguments":{"type":"object",)"
            R"("properties":{"zcity":{"type":"string"},"aunit":{"$ref":"#/anyOf/0/properties/arguments/$defs/u"}},)"
            R"("required":["zcity"],"$defs":{"u":{"enum":["c","f"]}}}},"required":["name","arguments"],)"
            R"("additionalProperties":false},)"
            R"({"type":"object","properties":{"name":{"const":"now"},"arguments":{"type":"object",)"
            R"("additionalProperties":false}},"required":["name","arguments"],"additionalProperties":false}]})");
  // The schema compiles (the parameters' $ref found under their new place) and takes a call.
  StatusOr<std::shared_ptr<const JsonSchema>> schema = JsonSchema::Compile(generate.json_schema());
  ASSERT_TRUE(schema.ok()) << schema.status();
  JsonState state(schema->get());
  const std::string call = R"({"name": "weather", "arguments": {"zcity": "Paris", "aunit": "f"}})";
  for (char c : call) ASSERT_TRUE(state.Advance(static_cast<uint8_t>(c))) << c;
  EXPECT_TRUE(state.complete());
  ASSERT_EQ(generate.chat().messages_size(), 2);
  EXPECT_EQ(generate.chat().messages(0).role(), "system");
  EXPECT_NE(generate.chat().messages(0).content().find(R"({"name":"weather","description":"Weather in a city")"),
            std::string::npos)
      << generate.chat().messages(0).content();
  EXPECT_EQ(generate.chat().messages(1).content(), "hi");

  auto named = Chat(R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],)" +
                    tools + R"(, "tool_choice": {"type": "function", "function": {"name": "weather"}}})");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_TRUE(named->tools->named);
  EXPECT_EQ(named->generate().json_schema(), named->tools->functions[0].parameters);
  EXPECT_TRUE(named->generate().chat().messages(0).content().starts_with("Be brief.\n\nCall the function weather"));

  auto strict = Chat(R"({"messages": [], "tool_choice": "required", "tools": [{"type": "function",
      "function": {"name": "f", "strict": true, "parameters": {"type": "object"}}}]})");
  ASSERT_TRUE(strict.ok()) << strict.status();
  EXPECT_FALSE(strict->generate().json_schema_best_effort()) << "every function strict";

  auto none = Chat(R"({"messages": [{"role": "user", "content": "hi"}], )" + tools + R"(, "tool_choice": "none"})");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->tools.has_value());
  EXPECT_EQ(none->generate().response_format(), v1::RESPONSE_FORMAT_TEXT);

  // auto (also the default with tools): a call or text; with parallel calls, one call or an
  // array of one or more.
  for (const std::string& choice : {std::string(), std::string(R"(, "tool_choice": "auto")")}) {
    auto automatic = Chat(R"({"messages": [{"role": "user", "content": "hi"}], )" + tools + choice +
                          R"(, "parallel_tool_calls": true})");
    ASSERT_TRUE(automatic.ok()) << automatic.status();
    EXPECT_TRUE(automatic->tools->automatic);
    EXPECT_TRUE(automatic->tools->parallel);
    EXPECT_EQ(automatic->generate().response_format(), v1::RESPONSE_FORMAT_JSON_SCHEMA_OR_TEXT);
    EXPECT_EQ(automatic->generate().json_schema(),
              R"({"anyOf":[{"$ref":"#/$defs/call"},{"type":"array","items":{"$ref":"#/$defs/call"},"minItems":1}],)"
              R"("$defs":{"call":{"anyOf":[{"type":"object","properties":{"name":{"const":"weather"},"arguments":)"
              R"({"type":"object","properties":{"zcity":{"type":"string"},"aunit":{"$ref":)"
              R"("#/$defs/call/anyOf/0/properties/arguments/$defs/u"}},"required":["zcity"],"$defs":{"u":{"enum":)"
              R"(["c","f"]}}}},"required":["name","arguments"],"additionalProperties":false},{"type":"object",)"
              R"("properties":{"name":{"const":"now"},"arguments":{"type":"object","additionalProperties":false}},)"
              R"("required":["name","arguments"],"additionalProperties":false}]}}})");
    EXPECT_TRUE(automatic->generate().chat().messages(0).content().starts_with(
        "You may call these functions. To call one, answer with only a JSON object"));
    EXPECT_NE(automatic->generate().chat().messages(0).content().find("or a JSON array of such objects"),
              std::string::npos);
    StatusOr<std::shared_ptr<const JsonSchema>> parallel = JsonSchema::Compile(automatic->generate().json_schema());
    ASSERT_TRUE(parallel.ok()) << parallel.status();
    for (const std::string& answer :
         {std::string(R"({"name": "now", "arguments": {}})"),
          std::string(R"([{"name": "weather", "arguments": {"zcity": "Oslo", "aunit": "c"}}, {"name": "now", )"
                      R"("arguments": {}}])"),
          std::string(R"([{"name": "now", "arguments": {}}])")}) {
      JsonState state(parallel->get());
      for (char c : answer) ASSERT_TRUE(state.Advance(static_cast<uint8_t>(c))) << answer << " at " << c;
      EXPECT_TRUE(state.complete()) << answer;
    }
    JsonState empty(parallel->get());
    EXPECT_TRUE(empty.Advance('['));
    EXPECT_FALSE(empty.Advance(']')) << "at least one call";
  }
  ExpectRefused(
      Chat(R"({"messages": [], )" + tools + R"(, "tool_choice": {"type": "function", "function": {"name": "x"}}})"),
      "'tool_choice' names 'x', which 'tools' lacks");
  ExpectRefused(Chat(R"({"messages": [], "tool_choice": "required"})"), "'tool_choice' needs 'tools'");
  ExpectRefused(Chat(R"({"messages": [], "tools": [{"type": "function", "function": {"name": "a b"}}],)"
                     R"( "tool_choice": "required"})"),
                "'tools[0].function.name' must be");
  ExpectRefused(Chat(R"({"messages": [], )" + tools +
                     R"(, "tool_choice": "required", "response_format": {"type": "json_object"}})"),
                "cannot be combined with tools");

  // An earlier call and its result, as the conversation continues.
  auto later = Chat(R"({"messages": [{"role": "user", "content": "hi"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
       "function": {"name": "weather", "arguments": "{\"zcity\": \"Paris\", \"aunit\": \"c\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "12 C"}]})");
  ASSERT_TRUE(later.ok()) << later.status();
  const v1::ChatMessages& chat = later->generate().chat();
  ASSERT_EQ(chat.messages_size(), 3);
  EXPECT_EQ(chat.messages(1).content(), R"({"name":"weather","arguments":{"zcity":"Paris","aunit":"c"}})");
  EXPECT_EQ(chat.messages(2).role(), "tool");
  EXPECT_EQ(chat.messages(2).content(), "12 C");
  // Parallel calls go back as the array that made them.
  auto two = Chat(R"({"messages": [{"role": "assistant", "content": null, "tool_calls": [
      {"id": "a", "type": "function", "function": {"name": "now", "arguments": "{}"}},
      {"id": "b", "type": "function", "function": {"name": "weather", "arguments": "{\"zcity\": \"Rome\"}"}}]}]})");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->generate().chat().messages(0).content(),
            R"([{"name":"now","arguments":{}},{"name":"weather","arguments":{"zcity":"Rome"}}])");
}

// Agents offer dozens of functions: the call's schema (an anyOf of one object per function) is
// followed as one path told apart by the name, not one path per function (at most 8 of those).
TEST(OpenAiRequestTest, ManyToolsMakeOneCallSchema) {
  std::string tools = R"("tools": [)";
  for (int i = 0; i < 40; ++i) {
    tools += absl::StrCat(i ? ", " : "", R"({"type": "function", "function": {"name": "tool_)", i,
                          R"(", "parameters": {"type": "object", "properties": {"x)", i,
                          R"(": {"type": "integer"}}, "required": ["x)", i, R"("]}}})");
  }
  tools += "]";
  for (const char* choice : {"required", "auto"}) {
    auto request = Chat(absl::StrCat(R"({"messages": [{"role": "user", "content": "hi"}], )", tools,
                                     R"(, "tool_choice": ")", choice, R"("})"));
    ASSERT_TRUE(request.ok()) << request.status();
    StatusOr<std::shared_ptr<const JsonSchema>> schema =
        JsonSchema::Compile(request->generate().json_schema(), request->generate().json_schema_best_effort());
    ASSERT_TRUE(schema.ok()) << schema.status();
    EXPECT_FALSE((*schema)->ambiguous());
    for (int i : {0, 9, 39}) {
      JsonState state(schema->get());
      const std::string call = absl::StrCat(R"({"name": "tool_)", i, R"(", "arguments": {"x)", i, R"(": 7}})");
      for (char c : call) ASSERT_TRUE(state.Advance(static_cast<uint8_t>(c))) << call << " at " << c;
      EXPECT_TRUE(state.complete());
      JsonState wrong(schema->get());
      const std::string mismatched = absl::StrCat(R"({"name": "tool_)", i, R"(", "arguments": {"x)", i + 1);
      size_t taken = 0;
      while (taken < mismatched.size() && wrong.Advance(static_cast<uint8_t>(mismatched[taken]))) ++taken;
      EXPECT_LT(taken, mismatched.size()) << "tool_" << i << " takes no x" << i + 1;
    }
  }
}

// The answer to a forced call comes back as tool_calls (whole and streamed); one cut short stays
// content.
TEST(OpenAiResponseTest, ForcedToolCallAnswersAreToolCalls) {
  OpenAiResponseHeader header{OpenAiEndpoint::kChatCompletions, "chatcmpl-7", "tiny", 1};
  OpenAiTools tools;
  tools.functions.push_back({"weather", "", R"({"type":"object"})"});
  tools.functions.push_back({"now", "", R"({"type":"object"})"});
  header.tools = std::make_shared<const OpenAiTools>(tools);
  const std::string answer = R"({"name": "weather", "arguments": {"zcity": "Paris"}})";
  const Json whole = Json::parse(
      OpenAiCompletionBody(header, answer, v1::FINISH_REASON_END_OF_SEQUENCE, v1::Usage()));
  const Json& choice = whole["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  EXPECT_EQ(choice["message"]["tool_calls"][0]["id"], "call_chatcmpl-7_0_0");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["type"], "function");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["name"], "weather");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["arguments"], R"({"zcity":"Paris"})");

  const Json chunk =
      Json::parse(OpenAiToolCallChunkBody(header, answer, v1::FINISH_REASON_END_OF_SEQUENCE, 2));
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["index"], 2);
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(chunk["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], R"({"zcity":"Paris"})");

  const std::string cut = R"({"name": "weather", "argu)";
  const Json truncated = Json::parse(
      OpenAiCompletionBody(header, cut, v1::FINISH_REASON_LENGTH, v1::Usage()));
  EXPECT_EQ(truncated["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(truncated["choices"][0]["message"]["content"], cut);
  EXPECT_FALSE(truncated["choices"][0]["message"].contains("tool_calls"));

  // Parallel calls: an array answer is every call, in order, each with its own index and id.
  const std::string array = R"([{"name": "now", "arguments": {}}, {"name": "weather", "arguments": {"zcity": "R"}}])";
  const Json not_parallel =
      Json::parse(OpenAiCompletionBody(header, array, v1::FINISH_REASON_END_OF_SEQUENCE, v1::Usage()));
  EXPECT_FALSE(not_parallel["choices"][0]["message"].contains("tool_calls")) << "parallel calls were not allowed";
  tools.parallel = true;
  header.tools = std::make_shared<const OpenAiTools>(tools);
  const Json parallel =
      Json::parse(OpenAiCompletionBody(header, array, v1::FINISH_REASON_END_OF_SEQUENCE, v1::Usage()));
  const Json& calls = parallel["choices"][0]["message"]["tool_calls"];
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["function"]["name"], "now");
  EXPECT_EQ(calls[1]["index"], 1);
  EXPECT_EQ(calls[1]["id"], "call_chatcmpl-7_0_1");
  EXPECT_EQ(calls[1]["function"]["arguments"], R"({"zcity":"R"})");
  EXPECT_EQ(parallel["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_FALSE(ParseToolCalls(tools, "[]").has_value());
  EXPECT_FALSE(ParseToolCalls(tools, R"([{"name": "now", "arguments": {}}, 1])").has_value());

  tools.parallel = false;
  tools.named = true;
  tools.functions.resize(1);
  header.tools = std::make_shared<const OpenAiTools>(tools);
  const Json named = Json::parse(
      OpenAiCompletionBody(header, R"({"zcity": "Oslo"})", v1::FINISH_REASON_END_OF_SEQUENCE, v1::Usage()));
  EXPECT_EQ(named["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "weather");
  EXPECT_EQ(named["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], R"({"zcity":"Oslo"})");
}

// Streamed calls: each opens once its name is known, and the pieces released as the answer grows
// (byte by byte, and in random pieces) add up to exactly that call's arguments' text: braces
// and brackets inside strings, escapes, whitespace between and after the calls.
TEST(OpenAiResponseTest, StreamedToolCallArgumentsAddUpToTheArguments) {
  OpenAiTools tools;
  tools.functions.push_back({"we\"ather", "", R"({"type":"object"})"});
  tools.functions.push_back({"now", "", R"({"type":"object"})"});
  struct Call {
    std::string name;
    std::string arguments;
  };
  // Feeds `answer` in pieces of 1..max_piece bytes; checks the deltas' order and indices.
  std::mt19937 rng(3);
  const auto stream = [&](const std::string& answer, size_t max_piece, bool finish = true) {
    ToolCallStream splitter(tools);
    std::vector<Call> calls;
    for (size_t n = 0; n < answer.size();) {
      n = std::min(answer.size(), n + 1 + rng() % max_piece);
      for (const ToolCallStream::Delta& d : splitter.Update(std::string_view(answer).substr(0, n),
                                                            finish && n == answer.size())) {
        if (d.opens) {
          EXPECT_EQ(d.call, static_cast<int>(calls.size()));
          EXPECT_TRUE(d.arguments.empty());
          calls.push_back({d.name, ""});
        } else {
          EXPECT_EQ(d.call + 1, static_cast<int>(calls.size())) << "a piece of an earlier call";
          EXPECT_FALSE(d.arguments.empty());
          if (!calls.empty()) calls.back().arguments += d.arguments;
        }
      }
    }
    return calls;
  };
  const std::string one = R"( {"name": "we\"ather",  "arguments": {"a": {"b": "}}"}, "c": [1, {}]} } )";
  for (size_t piece : {1, 3, 16}) {
    const std::vector<Call> calls = stream(one, piece);
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[0].name, "we\"ather");
    EXPECT_EQ(calls[0].arguments, R"({"a": {"b": "}}"}, "c": [1, {}]})");
  }
  // Not begun: nothing opens.
  EXPECT_TRUE(stream(R"({"name": "now", "arguments":)", 1, false).empty());
  EXPECT_TRUE(stream(R"({"name": "n)", 1, false).empty());
  // Cut short: what the arguments have, trailing whitespace held back until the end.
  const std::vector<Call> cut = stream(R"({"name": "now", "arguments": {"q": "a b )", 1, false);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].arguments, R"({"q": "a b)");
  EXPECT_EQ(stream(R"({"name": "now", "arguments": {"q": "a b )", 1, true)[0].arguments, R"({"q": "a b )");

  // An array of calls, only with parallel calls.
  const std::string several = " [ {\"name\": \"now\", \"arguments\": {\"x\": \"]}\\\"[\"}},\n"
                              "{\"name\":\"we\\\"ather\",\"arguments\":{}} , {\"name\": \"now\", "
                              "\"arguments\": {\"y\": [[], {\"z\": 2}]}} ] ";
  EXPECT_TRUE(stream(several, 1).empty()) << "an array is no call without parallel calls";
  tools.parallel = true;
  for (size_t piece : {1, 2, 7, 64}) {
    const std::vector<Call> calls = stream(several, piece);
    ASSERT_EQ(calls.size(), 3u) << piece;
    EXPECT_EQ(calls[0].name, "now");
    EXPECT_EQ(calls[0].arguments, R"({"x": "]}\"["})");
    EXPECT_EQ(calls[1].name, "we\"ather");
    EXPECT_EQ(calls[1].arguments, "{}");
    EXPECT_EQ(calls[2].arguments, R"({"y": [[], {"z": 2}]})");
  }
  EXPECT_EQ(stream(one, 4).size(), 1u) << "one call object with parallel calls allowed";
  tools.parallel = false;

  tools.named = true;
  const std::vector<Call> named = stream(R"({"q": "}"} )", 1);
  ASSERT_EQ(named.size(), 1u);
  EXPECT_EQ(named[0].name, "we\"ather");
  EXPECT_EQ(named[0].arguments, R"({"q": "}"})");

  OpenAiResponseHeader header{OpenAiEndpoint::kChatCompletions, "chatcmpl-7", "tiny", 1};
  header.tools = std::make_shared<const OpenAiTools>(tools);
  const Json head = Json::parse(OpenAiToolCallHeadChunkBody(header, "now", 1, 2));
  EXPECT_EQ(head["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(head["choices"][0]["delta"]["tool_calls"][0]["id"], "call_chatcmpl-7_1_2");
  EXPECT_EQ(head["choices"][0]["delta"]["tool_calls"][0]["index"], 2);
  EXPECT_EQ(head["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "now");
  EXPECT_EQ(head["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "");
  EXPECT_TRUE(head["choices"][0]["finish_reason"].is_null());
  const Json piece = Json::parse(
      OpenAiToolCallArgumentsChunkBody(header, R"({"q": )", v1::FINISH_REASON_UNSPECIFIED, false, 1, 2));
  EXPECT_EQ(piece["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], R"({"q": )");
  EXPECT_EQ(piece["choices"][0]["delta"]["tool_calls"][0]["index"], 2);
  EXPECT_FALSE(piece["choices"][0]["delta"]["tool_calls"][0].contains("id"));
  const Json done =
      Json::parse(OpenAiToolCallArgumentsChunkBody(header, "", v1::FINISH_REASON_END_OF_SEQUENCE, true, 1, 0));
  EXPECT_EQ(done["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_FALSE(done["choices"][0]["delta"].contains("tool_calls"));
  const Json cut_chunk =
      Json::parse(OpenAiToolCallArgumentsChunkBody(header, "1", v1::FINISH_REASON_LENGTH, false, 1, 0));
  EXPECT_EQ(cut_chunk["choices"][0]["finish_reason"], "length");
}

// Random answers (one call or arrays of calls, arguments of nested values with quotes, escapes
// and brackets inside strings, dumped compactly or indented, random whitespace around) split at
// random: every call opens in order with its name and its pieces join to exactly its arguments'
// text.
TEST(OpenAiResponseTest, RandomStreamedCallsAddUpToTheirArguments) {
  std::mt19937 rng(29);
  const std::vector<std::string> alphabet = {"a", "b", " ", "\"", "\\", "{", "}", "[", "]", ",", ":", "\n",
                                             "\u00e9"};
  const auto random_string = [&] {
    std::string out;
    for (int i = static_cast<int>(rng() % 6); i > 0; --i) out += alphabet[rng() % alphabet.size()];
    return out;
  };
  std::function<Json(int)> value = [&](int depth) -> Json {
    switch (depth > 3 ? rng() % 4 : rng() % 6) {
      case 0: return Json(random_string());
      case 1: return Json(static_cast<int>(rng() % 1000) - 500);
      case 2: return Json(rng() % 2 == 0);
      case 3: return Json(nullptr);
      case 4: {
        Json array = Json::array();
        for (int i = static_cast<int>(rng() % 3); i > 0; --i) array.push_back(value(depth + 1));
        return array;
      }
      default: {
        Json object = Json::object();
        for (int i = static_cast<int>(rng() % 3); i > 0; --i) object[random_string()] = value(depth + 1);
        return object;
      }
    }
  };
  const auto space = [&] { return std::string(rng() % 3, " \n"[rng() % 2]); };
  OpenAiTools tools;
  tools.functions.push_back({"f", "", R"({"type":"object"})"});
  tools.functions.push_back({"g_2", "", R"({"type":"object"})"});
  tools.parallel = true;
  for (int trial = 0; trial < 300; ++trial) {
    const int n_calls = 1 + static_cast<int>(rng() % 3);
    const bool array = n_calls > 1 || rng() % 2 == 0;
    std::vector<std::pair<std::string, std::string>> want;  // name, arguments text
    std::string answer = space();
    if (array) answer += absl::StrCat("[", space());
    for (int c = 0; c < n_calls; ++c) {
      Json arguments = Json::object();
      for (int i = static_cast<int>(rng() % 4); i > 0; --i) arguments[random_string()] = value(1);
      const int indent = static_cast<int>(rng() % 3) - 1;
      const std::string text = arguments.dump(indent);
      const std::string name = tools.functions[rng() % 2].name;
      want.emplace_back(name, text);
      if (c > 0) answer += absl::StrCat(space(), ",", space());
      answer += absl::StrCat("{", space(), "\"name\"", space(), ":", space(), "\"", name, "\"", space(), ",",
                             space(), "\"arguments\"", space(), ":", space(), text, space(), "}");
    }
    answer += space();
    if (array) answer += absl::StrCat("]", space());
    ToolCallStream stream(tools);
    std::vector<std::pair<std::string, std::string>> got;
    for (size_t n = 0; n < answer.size();) {
      n = std::min(answer.size(), n + 1 + rng() % 9);
      for (const ToolCallStream::Delta& d : stream.Update(std::string_view(answer).substr(0, n), n == answer.size())) {
        if (d.opens) {
          ASSERT_EQ(d.call, static_cast<int>(got.size())) << answer;
          got.emplace_back(d.name, "");
        } else {
          ASSERT_EQ(d.call + 1, static_cast<int>(got.size())) << answer;
          got.back().second += d.arguments;
        }
      }
    }
    ASSERT_EQ(got, want) << answer;
    ASSERT_TRUE(ParseToolCalls(tools, answer).has_value()) << answer;
    EXPECT_EQ(ParseToolCalls(tools, answer)->size(), want.size());
  }
}

TEST(OpenAiRequestTest, WrongTypesAndRangesNameTheField) {
  ExpectRefused(Completion(R"({"prompt": "x", "temperature": "hot"})"), "'temperature' must be a number");
  // Past float's range (a double converted to float would be undefined behaviour).
  ExpectRefused(Completion(R"({"prompt": "x", "temperature": 1e39})"), "'temperature' is out of range");
  ExpectRefused(Completion(R"({"prompt": "x", "top_p": -1e300})"), "'top_p' is out of range");
  ExpectRefused(Completion(R"({"prompt": "x", "max_tokens": 0})"), "'max_tokens' must be at least 1");
  ExpectRefused(Completion(R"({"prompt": "x", "max_tokens": 1.5})"), "'max_tokens' must be an integer");
  ExpectRefused(Completion(R"({"prompt": "x", "seed": -1})"), "'seed' must not be negative");
  ExpectRefused(Completion(R"({"prompt": "x", "top_k": -2})"), "'top_k'");
  ExpectRefused(Completion(R"({"prompt": "x", "stop": [1]})"), "'stop'");
  ExpectRefused(Completion(R"({"prompt": "x", "stream": "yes"})"), "'stream'");
  ExpectRefused(Completion(R"({"prompt": "x", "model": 3})"), "'model'");
  ExpectRefused(Completion(R"({"prompt": "x", "stream_options": {"include_usage": true}})"), "stream_options");
  ExpectRefused(Completion(R"({"prompt": "x",)"), "not valid JSON");
  ExpectRefused(Completion(R"(["prompt"])"), "JSON object");
}

TEST(OpenAiRequestTest, BodiesTooDeepOrWithTooManyValuesAreRefusedBeforeTheyAreBuilt) {
  // A million-and-a-bit token ids: past the value limit (a real prompt holds a context's worth).
  std::string many = R"({"prompt": [)";
  for (int i = 0; i < (1 << 20) + 10; ++i) absl::StrAppend(&many, i == 0 ? "" : ",", 1);
  many += "]}";
  ExpectRefused(Completion(many), "more than 1048576 JSON values");
  std::string fewer = R"({"prompt": [)";
  for (int i = 0; i < 100000; ++i) absl::StrAppend(&fewer, i == 0 ? "" : ",", 1);
  fewer += "]}";
  EXPECT_TRUE(Completion(fewer).ok());

  const std::string deep = R"({"prompt": "x", "user": )" + std::string(33, '[') + std::string(33, ']') + "}";
  ExpectRefused(Completion(deep), "nests deeper than 32 levels");
  const std::string shallow = R"({"prompt": "x", "user": )" + std::string(30, '[') + std::string(30, ']') + "}";
  EXPECT_TRUE(Completion(shallow).ok());
  // Malformed JSON still says so.
  ExpectRefused(Completion(R"({"prompt": [1, 2)"), "not valid JSON");
}

TEST(OpenAiRequestTest, FeaturesThisServerLacksAreRefusedNotIgnored) {
  ExpectRefused(Completion(R"({"prompt": "x", "best_of": 3})"), "'best_of'");
  ExpectRefused(Chat(R"({"messages": [], "echo": true})"), "'echo'");  // completions echo
  ExpectRefused(Completion(R"({"prompt": "x", "suffix": "end"})"), "'suffix'");
  ExpectRefused(Chat(R"({"messages": [], "functions": [{"name": "f"}]})"),
                "'functions' is not supported (use 'tools')");
  ExpectRefused(Completion(R"({"prompt": "x", "response_format": {"type": "yaml"}})"),
                "'yaml' is not one of text, json_object, json_schema");
  ExpectRefused(Completion(R"({"prompt": "x", "response_format": "json"})"), "'response_format' must be an object");
  // Their no-op values are fine.
  EXPECT_TRUE(Completion(R"({"prompt": "x", "n": 1, "best_of": 1, "echo": false, "logprobs": null})").ok());
  EXPECT_TRUE(Chat(R"({"messages": [], "n": 1, "tools": [], "tool_choice": "none", "logprobs": false,
      "response_format": {"type": "text"}})")
                  .ok());
}

TEST(OpenAiRequestTest, ChatMessagesBecomeTheChat) {
  auto parsed = Chat(R"({"messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]},
      {"role": "assistant", "content": null},
      {"role": "user", "content": "Again", "name": "bob"}],
    "max_tokens": 9, "max_completion_tokens": 5, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::ChatMessages& chat = parsed->generate().chat();
  ASSERT_EQ(chat.messages_size(), 4);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.");
  EXPECT_EQ(chat.messages(1).content(), "Hello, world");
  EXPECT_EQ(chat.messages(2).role(), "assistant");
  EXPECT_EQ(chat.messages(2).content(), "");
  EXPECT_EQ(parsed->generate().max_tokens(), 5u);  // max_completion_tokens wins
  EXPECT_TRUE(parsed->stream);
  EXPECT_TRUE(parsed->include_usage);

  auto unbounded = Chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(unbounded.ok()) << unbounded.status();
  EXPECT_EQ(unbounded->generate().max_tokens(), 0u);  // the rest of the context

  ExpectRefused(Chat(R"({"model": "m"})"), "'messages' is required");
  ExpectRefused(Chat(R"({"messages": {"role": "user"}})"), "'messages' must be an array");
  ExpectRefused(Chat(R"({"messages": [{"role": "critic", "content": "42"}]})"), "'critic' is not supported");
  ExpectRefused(Chat(R"({"messages": [{"content": "hi"}]})"), "messages[0].role");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})"),
                "text parts only");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": 7}]})"), "messages[0].content");
}

// vLLM's chat-template fields: add_generation_prompt, continue_final_message (a prefilled
// answer) and chat_template_kwargs, carried to the chat; /tokenize reads them too.
TEST(OpenAiRequestTest, ChatTemplateOptions) {
  auto plain = Chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->generate().chat().has_add_generation_prompt());
  EXPECT_FALSE(plain->generate().chat().continue_final_message());
  EXPECT_EQ(plain->generate().chat().template_kwargs(), "");
  auto parsed = Chat(R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure,"}],
      "add_generation_prompt": false, "continue_final_message": true,
      "chat_template_kwargs": {"enable_thinking": false, "tags": ["a"]}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::ChatMessages& chat = parsed->generate().chat();
  EXPECT_TRUE(chat.has_add_generation_prompt());
  EXPECT_FALSE(chat.add_generation_prompt());
  EXPECT_TRUE(chat.continue_final_message());
  EXPECT_EQ(Json::parse(chat.template_kwargs()), Json::parse(R"({"enable_thinking": false, "tags": ["a"]})"));
  auto tokenize = ParseOpenAiTokenize(
      R"({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": false,
          "chat_template_kwargs": {"x": 1}})");
  ASSERT_TRUE(tokenize.ok()) << tokenize.status();
  EXPECT_FALSE(tokenize->chat->add_generation_prompt());
  EXPECT_EQ(tokenize->chat->template_kwargs(), R"({"x":1})");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": [1]})"),
                "'chat_template_kwargs' must be an object");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": "hi"}], "continue_final_message": "yes"})"),
                "continue_final_message");
}

// Completions: "logprobs": N is the chosen token's and N alternatives; chat: "logprobs": true and
// "top_logprobs": N. Out of range, of the wrong type or top_logprobs alone: refused by name.
TEST(OpenAiRequestTest, LogprobsFields) {
  // (parsed, expected logprobs, expected top_logprobs)
  const auto expect = [](const StatusOr<OpenAiRequest>& parsed, bool logprobs, uint32_t top) {
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->generate().logprobs(), logprobs);
    EXPECT_EQ(parsed->generate().top_logprobs(), top);
  };
  expect(Completion(R"({"prompt": "x", "logprobs": null})"), false, 0);
  expect(Completion(R"({"prompt": "x", "logprobs": 5})"), true, 5);
  expect(Completion(R"({"prompt": "x", "logprobs": 0})"), true, 0);
  expect(Chat(R"({"messages": [], "logprobs": true, "top_logprobs": 20})"), true, 20);
  expect(Chat(R"({"messages": [], "logprobs": false, "top_logprobs": 0})"), false, 0);
  ExpectRefused(Completion(R"({"prompt": "x", "logprobs": 21})"), "'logprobs' must be in [0, 20]");
  ExpectRefused(Completion(R"({"prompt": "x", "logprobs": true})"), "'logprobs' must be an integer");
  ExpectRefused(Chat(R"({"messages": [], "logprobs": 2})"), "'logprobs' must be true or false");
  ExpectRefused(Chat(R"({"messages": [], "top_logprobs": 2})"), "'top_logprobs' needs");
  ExpectRefused(Chat(R"({"messages": [], "logprobs": true, "top_logprobs": -1})"), "'top_logprobs'");
}

// Completions' "echo": with "logprobs" the prompt is scored too; "max_tokens": 0 (echo only) runs
// one token that is not shown, so its own log probability is not asked for.
TEST(OpenAiRequestTest, EchoAndPromptOnlyAnswers) {
  auto echo = Completion(R"({"prompt": "x", "echo": true, "logprobs": 3, "max_tokens": 5})");
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_TRUE(echo->echo);
  EXPECT_FALSE(echo->prompt_only);
  EXPECT_TRUE(echo->generate().prompt_logprobs());
  EXPECT_TRUE(echo->generate().logprobs());
  EXPECT_EQ(echo->generate().top_logprobs(), 3u);
  EXPECT_EQ(echo->generate().max_tokens(), 5u);

  auto only = Completion(R"({"prompt": ["x", "y"], "echo": true, "logprobs": 0, "max_tokens": 0})");
  ASSERT_TRUE(only.ok()) << only.status();
  EXPECT_TRUE(only->prompt_only);
  for (const v1::GenerateRequest& choice : only->choices) {
    EXPECT_EQ(choice.max_tokens(), 1u);
    EXPECT_TRUE(choice.prompt_logprobs());
    EXPECT_FALSE(choice.logprobs());
  }

  auto text_only = Completion(R"({"prompt": "x", "echo": true})");
  ASSERT_TRUE(text_only.ok()) << text_only.status();
  EXPECT_TRUE(text_only->echo);
  EXPECT_FALSE(text_only->generate().prompt_logprobs());
  auto off = Completion(R"({"prompt": "x", "echo": false, "logprobs": 1})");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->generate().prompt_logprobs());

  ExpectRefused(Completion(R"({"prompt": "x", "echo": 1})"), "'echo' must be true or false");
  ExpectRefused(Completion(R"({"prompt": "x", "echo": false, "max_tokens": 0})"), "0 only with");
}

// An echoed prompt's first token has no context: null in token_logprobs and top_logprobs, still
// counted in text_offset.
TEST(OpenAiResponseTest, AnUnscoredPromptTokenIsNull) {
  std::vector<OpenAiTokenLogprobs> entries = {{1, "<s>", "<s>", 0.0f, {}, /*scored=*/false},
                                              {7, " a", " a", -0.5f, {{7, " a", " a", -0.5f}}}};
  const OpenAiResponseHeader header{OpenAiEndpoint::kCompletions, "cmpl-1", "tiny", 1};
  const Json body = Json::parse(OpenAiCompletionBody(header, " a", v1::FINISH_REASON_LENGTH, v1::Usage(), &entries));
  const Json& legacy = body["choices"][0]["logprobs"];
  EXPECT_EQ(legacy["tokens"], (Json{"<s>", " a"}));
  EXPECT_EQ(legacy["token_logprobs"], (Json{nullptr, -0.5}));
  EXPECT_EQ(legacy["top_logprobs"], (Json{nullptr, {{" a", -0.5}}}));
  EXPECT_EQ(legacy["text_offset"], (Json{0, 3}));
}

// Both formats of the log probabilities: completions' parallel lists and top dict (which always
// holds the chosen token), with byte offsets; chat's content entries with their bytes.
TEST(OpenAiResponseTest, LogprobsInBothFormats) {
  const std::vector<OpenAiTokenLogprobs> entries = {
      {7, " a", " a", -0.5f, {{7, " a", " a", -0.5f}, {8, "b", "b", -1.5f}}},
      {9, "\xEF\xBF\xBD", "\xc3", -2.0f, {{3, "é", "é", -0.25f}}},  // half of a character; not among the top
  };
  OpenAiResponseHeader header{OpenAiEndpoint::kCompletions, "cmpl-1", "tiny", 1};
  const Json completion =
      Json::parse(OpenAiCompletionBody(header, " a", v1::FINISH_REASON_LENGTH, v1::Usage(), &entries));
  const Json& legacy = completion["choices"][0]["logprobs"];
  EXPECT_EQ(legacy["tokens"], (Json{" a", "\xEF\xBF\xBD"}));
  EXPECT_EQ(legacy["token_logprobs"], (Json{-0.5, -2.0}));
  EXPECT_EQ(legacy["text_offset"], (Json{0, 2}));
  EXPECT_EQ(legacy["top_logprobs"][0], (Json{{" a", -0.5}, {"b", -1.5}}));
  EXPECT_EQ(legacy["top_logprobs"][1], (Json{{"é", -0.25}, {"\xEF\xBF\xBD", -2.0}}));
  const Json chunk = Json::parse(OpenAiChunkBody(header, "", v1::FINISH_REASON_UNSPECIFIED, false, &entries, 10));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["text_offset"], (Json{10, 12}));
  EXPECT_EQ(OpenAiLogprobsLength(entries), 3);  // characters, not bytes
  EXPECT_TRUE(Json::parse(OpenAiCompletionBody(header, "", v1::FINISH_REASON_LENGTH, v1::Usage()))["choices"][0]
                  ["logprobs"]
                      .is_null());

  header.endpoint = OpenAiEndpoint::kChatCompletions;
  const Json chat = Json::parse(OpenAiCompletionBody(header, " a", v1::FINISH_REASON_LENGTH, v1::Usage(), &entries));
  const Json& content = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], " a");
  EXPECT_EQ(content[0]["logprob"], -0.5);
  EXPECT_EQ(content[0]["bytes"], (Json{32, 97}));
  EXPECT_EQ(content[0]["top_logprobs"][1], (Json{{"token", "b"}, {"logprob", -1.5}, {"bytes", Json{98}}}));
  EXPECT_EQ(content[1]["bytes"], (Json{195}));
  const Json chat_chunk = Json::parse(OpenAiChunkBody(header, "", v1::FINISH_REASON_UNSPECIFIED, false, &entries));
  EXPECT_EQ(chat_chunk["choices"][0]["logprobs"]["content"].size(), 2u);
}

TEST(OpenAiResponseTest, WholeResponsesCarryTextFinishAndUsage) {
  v1::Usage usage;
  usage.set_prompt_tokens(5);
  usage.set_completion_tokens(3);
  usage.set_cached_prompt_tokens(4);
  OpenAiResponseHeader header{OpenAiEndpoint::kCompletions, "cmpl-1", "tiny", 1700000000};
  const Json completion = Json::parse(OpenAiCompletionBody(header, "abc", v1::FINISH_REASON_LENGTH, usage));
  EXPECT_EQ(completion["object"], "text_completion");
  EXPECT_EQ(completion["id"], "cmpl-1");
  EXPECT_EQ(completion["model"], "tiny");
  EXPECT_EQ(completion["created"], 1700000000);
  EXPECT_EQ(completion["choices"][0]["text"], "abc");
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(completion["usage"]["total_tokens"], 8);
  EXPECT_EQ(completion["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

  header.endpoint = OpenAiEndpoint::kChatCompletions;
  const Json chat = Json::parse(OpenAiCompletionBody(header, "hi", v1::FINISH_REASON_STOP_STRING, usage));
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");
}

TEST(OpenAiResponseTest, ChunksAndTheUsageChunk) {
  OpenAiResponseHeader header{OpenAiEndpoint::kChatCompletions, "chatcmpl-1", "tiny", 1};
  const Json first = Json::parse(OpenAiChunkBody(header, "", v1::FINISH_REASON_UNSPECIFIED, /*first=*/true));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (Json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const Json last = Json::parse(OpenAiChunkBody(header, "", v1::FINISH_REASON_END_OF_SEQUENCE, false));
  EXPECT_EQ(last["choices"][0]["delta"], Json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");

  header.endpoint = OpenAiEndpoint::kCompletions;
  const Json text = Json::parse(OpenAiChunkBody(header, "de", v1::FINISH_REASON_UNSPECIFIED, true));
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "de");
  EXPECT_FALSE(text.contains("usage"));
  header.include_usage = true;  // then every chunk names the field, null until the last
  const Json with_usage = Json::parse(OpenAiChunkBody(header, "de", v1::FINISH_REASON_UNSPECIFIED, false));
  ASSERT_TRUE(with_usage.contains("usage"));
  EXPECT_TRUE(with_usage["usage"].is_null());
  v1::Usage usage;
  usage.set_prompt_tokens(2);
  const Json tail = Json::parse(OpenAiUsageChunkBody(header, usage));
  EXPECT_TRUE(tail["choices"].empty());
  EXPECT_EQ(tail["usage"]["prompt_tokens"], 2);
}

TEST(OpenAiResponseTest, InvalidUtf8IsReplacedNotFatal) {
  OpenAiResponseHeader header{OpenAiEndpoint::kCompletions, "cmpl-1", "tiny", 1};
  const Json body = Json::parse(OpenAiChunkBody(header, "a\xff", v1::FINISH_REASON_UNSPECIFIED, false));
  EXPECT_EQ(body["choices"][0]["text"], "a\xEF\xBF\xBD");
}

TEST(OpenAiResponseTest, ErrorsModelsAndHttpStatuses) {
  const Json error = Json::parse(OpenAiErrorBody(absl::ResourceExhaustedError("queue full")));
  EXPECT_EQ(error["error"]["message"], "queue full");
  EXPECT_EQ(error["error"]["type"], "rate_limit_error");
  EXPECT_EQ(error["error"]["code"], "RESOURCE_EXHAUSTED");

  const Json models = Json::parse(OpenAiModelsBody("tiny", 5, 512));
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["max_model_len"], 512);

  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInternal), 500);
}

}  // namespace
}  // namespace bitfleet::coordinator

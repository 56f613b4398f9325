// The OpenAI-compatible HTTP API of a CoordinatorServer whose replica is a FakeExecutor in this
// process: answers equal the gRPC API's for the same request, streamed chunks join to the
// whole answer, and refusals carry their HTTP status and an OpenAI error object.
#include "coordinator/http_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "bitfleet/v1/inference.grpc.pb.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/http_listener.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/unit/coordinator/fake_server.h"
#include "tests/unit/coordinator/http_api_fixture.h"

namespace bitfleet::coordinator {
namespace {

using Json = nlohmann::json;

TEST_F(HttpApiTest, ListsTheModelAndAnswersHealth) {
  auto models = client_->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  const Json body = Json::parse(models->body);
  ASSERT_EQ(body["data"].size(), 1u);
  EXPECT_EQ(body["data"][0]["id"], server_->model_name());
  EXPECT_EQ(body["data"][0]["max_model_len"], server_->max_context());

  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "SERVING\n");
}

TEST_F(HttpApiTest, CompletionEqualsTheGrpcAnswer) {
  const auto [grpc_text, grpc_tokens] = GrpcAnswer("Hello world", 12);
  ASSERT_EQ(grpc_tokens, 12u);
  ASSERT_FALSE(grpc_text.empty());
  auto response = Post("/v1/completions", R"({"prompt": "Hello world", "max_tokens": 12, "temperature": 0})");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(response->get_header_value("Content-Type"), "application/json");
  const Json body = Json::parse(response->body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], grpc_text);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["completion_tokens"], 12);
  EXPECT_GT(body["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(body["model"], server_->model_name());
  EXPECT_EQ(body["id"].get<std::string>().rfind("cmpl-", 0), 0u) << body["id"];
}

// The gRPC API's logprobs for a greedy prompt: (token ids, logprobs), each checked against the
// fake replica's values (FakeLogprob), which the coordinator must pass through unchanged.
std::pair<std::vector<int32_t>, std::vector<v1::TokenLogprobs>> GrpcLogprobs(int port, const std::string& prompt,
                                                                             uint32_t max_tokens, uint32_t top) {
  auto stub = v1::Inference::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::GenerateRequest request;
  request.set_prompt(prompt);
  request.set_max_tokens(max_tokens);
  request.mutable_sampling()->set_temperature(0);
  request.set_logprobs(true);
  request.set_top_logprobs(top);
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse message;
  std::vector<int32_t> ids;
  std::vector<v1::TokenLogprobs> logprobs;
  while (reader->Read(&message)) {
    EXPECT_EQ(message.logprobs_size(), message.token_ids_size());
    ids.insert(ids.end(), message.token_ids().begin(), message.token_ids().end());
    logprobs.insert(logprobs.end(), message.logprobs().begin(), message.logprobs().end());
  }
  EXPECT_TRUE(reader->Finish().ok());
  for (size_t i = 0; i < std::min(ids.size(), logprobs.size()); ++i) {
    EXPECT_EQ(logprobs[i].logprob(), testing::FakeLogprob(ids[i], 0));
    EXPECT_EQ(logprobs[i].top_size(), static_cast<int>(top));
    for (int k = 0; k < logprobs[i].top_size(); ++k) {
      EXPECT_EQ(logprobs[i].top(k).logprob(), testing::FakeLogprob(ids[i], k));
    }
  }
  return {ids, logprobs};
}

// Completions' "logprobs": N: per token its text, log probability, a dict of the top N (and the
// chosen token) by text, and its byte offset; the texts join to the completion, the values are
// the gRPC API's. Streamed chunks carry the same entries, split as the text is.
TEST_F(HttpApiTest, CompletionLogprobsInOpenAisLegacyFormat) {
  const auto [ids, want] = GrpcLogprobs(server_->api_port(), "Hello world", 10, 2);
  ASSERT_EQ(ids.size(), 10u);
  auto response = Post("/v1/completions", R"({"prompt": "Hello world", "max_tokens": 10, "temperature": 0,
      "logprobs": 2})");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const Json body = Json::parse(response->body);
  const Json& logprobs = body["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), 10u) << logprobs.dump();
  std::string joined;
  int64_t characters = 0;  // text_offset counts characters
  for (size_t i = 0; i < 10; ++i) {
    const std::string token = logprobs["tokens"][i].get<std::string>();
    EXPECT_EQ(logprobs["text_offset"][i], characters);
    joined += token;
    for (unsigned char c : token) characters += (c & 0xC0) != 0x80 ? 1 : 0;
    EXPECT_EQ(logprobs["token_logprobs"][i].get<double>(), want[i].logprob());
    const Json& top = logprobs["top_logprobs"][i];
    EXPECT_GE(top.size(), 1u);
    EXPECT_LE(top.size(), 3u);
    EXPECT_EQ(top[token].get<double>(), want[i].logprob());
  }
  EXPECT_EQ(joined, body["choices"][0]["text"].get<std::string>());

  auto streamed = Post("/v1/completions", R"({"prompt": "Hello world", "max_tokens": 10, "temperature": 0,
      "logprobs": 2, "stream": true})");
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200) << streamed->body;
  Json tokens = Json::array();
  Json offsets = Json::array();
  for (size_t at = 0; (at = streamed->body.find("data: {", at)) != std::string::npos;) {
    const size_t end = streamed->body.find("\n\n", at);
    const Json chunk = Json::parse(streamed->body.substr(at + 6, end - at - 6));
    for (const Json& t : chunk["choices"][0]["logprobs"]["tokens"]) tokens.push_back(t);
    for (const Json& o : chunk["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
    at = end;
  }
  EXPECT_EQ(tokens, logprobs["tokens"]);
  EXPECT_EQ(offsets, logprobs["text_offset"]);
}

// POST /tokenize and /detokenize (vLLM's extensions): the gRPC API's Tokenize and Detokenize,
// with the count and the context; bad bodies are 400s.
TEST_F(HttpApiTest, TokenizeAndDetokenizeAnswerAsTheGrpcApi) {
  auto stub = v1::Inference::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->api_port()), grpc::InsecureChannelCredentials()));
  for (const bool add_special : {true, false}) {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text("Hello world, once upon a time");
    request.set_add_special(add_special);
    v1::TokenizeResponse want;
    ASSERT_TRUE(stub->Tokenize(&context, request, &want).ok());
    auto response = Post("/tokenize", absl::StrCat(R"({"prompt": "Hello world, once upon a time", )",
                                                   R"("add_special_tokens": )", add_special ? "true" : "false", "}"));
    ASSERT_TRUE(response);
    ASSERT_EQ(response->status, 200) << response->body;
    const Json body = Json::parse(response->body);
    EXPECT_EQ(body["tokens"], Json(std::vector<int32_t>(want.token_ids().begin(), want.token_ids().end())));
    EXPECT_EQ(body["count"], want.token_ids_size());
    EXPECT_EQ(body["max_model_len"], server_->max_context());

    auto back = Post("/detokenize", Json{{"tokens", body["tokens"]}}.dump());
    ASSERT_TRUE(back);
    ASSERT_EQ(back->status, 200) << back->body;
    grpc::ClientContext detokenize_context;
    v1::DetokenizeRequest ids;
    ids.mutable_token_ids()->CopyFrom(want.token_ids());
    v1::DetokenizeResponse text;
    ASSERT_TRUE(stub->Detokenize(&detokenize_context, ids, &text).ok());
    EXPECT_EQ(Json::parse(back->body)["prompt"], text.text());
  }
  for (const auto& [path, body, words] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"/tokenize", R"({})", "either 'prompt'"},
           {"/tokenize", R"({"prompt": "x", "messages": []})", "either 'prompt'"},
           {"/tokenize", R"({"prompt": 5})", "'prompt' must be a string"},
           {"/tokenize", R"({"messages": [{"role": "user", "content": "hi"}]})", "chat template"},
           {"/detokenize", R"({"tokens": [1, "a"]})", "'tokens'"},
           {"/detokenize", R"({"tokens": [1, 99999]})", "99999"},
           {"/detokenize", R"({})", "'tokens' is required"},
       }) {
    auto refused = Post(path, body);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 400) << path << " " << body << ": " << refused->body;
    EXPECT_NE(refused->body.find(words), std::string::npos) << refused->body;
  }
}

// Bad logprobs values are 400s naming the field (chat's format is checked in
// openai_protocol_test and, on a model with a chat template, in serving_openai_test.py).
TEST_F(HttpApiTest, LogprobsRefusalsNameTheirField) {
  const std::string messages = R"("messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6)";
  for (const auto& [endpoint, extra, field] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"/v1/chat/completions", R"("top_logprobs": 2)", "top_logprobs"},
           {"/v1/chat/completions", R"("logprobs": true, "top_logprobs": 21)", "top_logprobs"},
           {"/v1/chat/completions", R"("logprobs": 1)", "logprobs"},
           {"/v1/completions", R"("logprobs": 21)", "logprobs"},
           {"/v1/completions", R"("logprobs": -1)", "logprobs"},
       }) {
    const std::string request = endpoint == "/v1/completions"
                                    ? R"({"prompt": "Hi", "max_tokens": 2, )" + extra + "}"
                                    : "{" + messages + ", " + extra + "}";
    auto refused = Post(endpoint, request);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 400) << request << ": " << refused->body;
    EXPECT_NE(refused->body.find("'" + field + "'"), std::string::npos) << refused->body;
  }
}

TEST_F(HttpApiTest, StreamedChunksJoinToTheWholeAnswer) {
  const auto [grpc_text, grpc_tokens] = GrpcAnswer("Once upon", 20);
  auto response = Post("/v1/completions", R"({"prompt": "Once upon", "max_tokens": 20, "temperature": 0,
      "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(response->get_header_value("Content-Type"), "text/event-stream");
  // Every event is "data: ...\n\n"; the last is [DONE], the one before it the usage chunk.
  std::vector<std::string> events;
  size_t at = 0;
  while (at < response->body.size()) {
    ASSERT_EQ(response->body.compare(at, 6, "data: "), 0) << response->body.substr(at);
    const size_t end = response->body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    events.push_back(response->body.substr(at + 6, end - at - 6));
    at = end + 2;
  }
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const Json usage = Json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], grpc_tokens);
  std::string text;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const Json chunk = Json::parse(events[i]);
    text += chunk["choices"][0]["text"].get<std::string>();
    const bool last = i + 3 == events.size();
    EXPECT_EQ(chunk["choices"][0]["finish_reason"].is_null(), !last) << events[i];
  }
  EXPECT_EQ(text, grpc_text);
}

// Batched prompts and n: one choice per (prompt, j), indexed prompt by prompt, each the answer
// its prompt gets alone (greedy), usage counting each prompt once; streamed, the chunks carry
// their choice's index and join to the same texts.
TEST_F(HttpApiTest, BatchedPromptsAndSeveralChoices) {
  const auto [hello, hello_tokens] = GrpcAnswer("Hello world", 6);
  const auto [once, once_tokens] = GrpcAnswer("Once upon", 6);
  const std::string body = R"({"prompt": ["Hello world", "Once upon"], "n": 2, "max_tokens": 6,
      "temperature": 0})";
  auto response = Post("/v1/completions", body);
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const Json whole = Json::parse(response->body);
  ASSERT_EQ(whole["choices"].size(), 4u);
  const std::vector<std::string> want = {hello, hello, once, once};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(whole["choices"][i]["index"], i);
    EXPECT_EQ(whole["choices"][i]["text"], want[i]) << "choice " << i;
  }
  EXPECT_EQ(whole["usage"]["completion_tokens"], 24);
  auto single = Post("/v1/completions", R"({"prompt": "Hello world", "max_tokens": 6, "temperature": 0})");
  auto other = Post("/v1/completions", R"({"prompt": "Once upon", "max_tokens": 6, "temperature": 0})");
  ASSERT_TRUE(single && other);
  EXPECT_EQ(whole["usage"]["prompt_tokens"], Json::parse(single->body)["usage"]["prompt_tokens"].get<int>() +
                                                 Json::parse(other->body)["usage"]["prompt_tokens"].get<int>());

  auto streamed = Post("/v1/completions", R"({"prompt": ["Hello world", "Once upon"], "n": 2, "max_tokens": 6,
      "temperature": 0, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200) << streamed->body;
  std::vector<std::string> texts(4);
  int usage_chunks = 0;
  for (size_t at = 0; (at = streamed->body.find("data: {", at)) != std::string::npos;) {
    const size_t end = streamed->body.find("\n\n", at);
    const Json chunk = Json::parse(streamed->body.substr(at + 6, end - at - 6));
    if (chunk["choices"].empty()) {
      ++usage_chunks;
      EXPECT_EQ(chunk["usage"]["completion_tokens"], 24);
    }
    for (const Json& choice : chunk["choices"]) {
      texts[choice["index"].get<size_t>()] += choice["text"].get<std::string>();
    }
    at = end;
  }
  EXPECT_EQ(texts, want);
  EXPECT_EQ(usage_chunks, 1);
}

TEST_F(HttpApiTest, RefusalsCarryTheirStatusAndAnOpenAiError) {
  const auto expect_error = [&](const httplib::Result& response, int status, const std::string& words) {
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, status) << response->body;
    const Json body = Json::parse(response->body, nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << response->body;
    const std::string message = body["error"]["message"].get<std::string>();
    EXPECT_NE(message.find(words), std::string::npos) << message;
  };
  expect_error(Post("/v1/completions", "{"), 400, "not valid JSON");
  expect_error(Post("/v1/completions", R"({"prompt": "x", "n": 65})"), 400, "'n'");
  // One bad prompt of a batch refuses the request, naming it.
  expect_error(Post("/v1/completions", R"({"prompt": [[1, 2], [1, 99999]], "max_tokens": 2})"), 400, "choice 1");
  expect_error(Post("/v1/completions", R"({"prompt": "x", "temperature": -1})"), 400, "temperature");
  expect_error(Post("/v1/completions", R"({"prompt": "x", "max_tokens": 100000})"), 400, "context");
  expect_error(Post("/v1/completions", R"({"prompt": "x", "model": "other"})"), 404, "other");
  // The synthetic model has no chat template.
  expect_error(Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})"), 400,
               "template");
  expect_error(client_->Get("/v1/nothing"), 404, "no route");
  // Bodies past the limit (4 MiB) are refused before they are parsed.
  const std::string huge = absl::StrCat(R"({"prompt": ")", std::string(5 << 20, 'a'), R"("})");
  auto too_large = Post("/v1/completions", huge);
  ASSERT_TRUE(too_large);
  EXPECT_EQ(too_large->status, 413);
  // The server still serves.
  auto ok = Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

// cpp-httplib bounds a body by its Content-Length only: a chunked or compressed body would be
// read (and inflated) into memory whole, past max_body_bytes. Both are refused before reading.
// Sends `request` whole in one write on a new connection and reads the answer: the response
// text through its Content-Length body ("" when the connection fails). One write, because the server
// answers these refusals without reading the body and closes: a client still writing its body
// then (cpp-httplib's, chunk by chunk) can fail its write and lose the answer (seen in CI, ~1%).
std::string RawExchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    timeval timeout{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    char buffer[4096];
    ssize_t got = 0;
    while ((got = recv(fd, buffer, sizeof(buffer), 0)) > 0) {
      answer.append(buffer, static_cast<size_t>(got));
      const size_t head_end = answer.find("\r\n\r\n");
      const size_t length_at = absl::AsciiStrToLower(answer.substr(0, head_end)).find("content-length: ");
      if (head_end == std::string::npos || length_at == std::string::npos) continue;
      const size_t length = std::strtoul(answer.c_str() + length_at + 16, nullptr, 10);
      if (answer.size() >= head_end + 4 + length) break;
    }
  }
  close(fd);
  return answer;
}

TEST_F(HttpApiTest, BodiesWithoutABoundAreRefusedBeforeTheyAreRead) {
  const std::string body = R"({"prompt": "x", "max_tokens": 2})";
  const std::string chunked = RawExchange(
      server_->http_port(), absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                         "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                                         absl::Hex(body.size()), "\r\n", body, "\r\n0\r\n\r\n"));
  EXPECT_EQ(chunked.rfind("HTTP/1.1 411 ", 0), 0u) << chunked;
  EXPECT_NE(chunked.find("Content-Length"), std::string::npos) << chunked;  // the error names the fix

  const std::string compressed = RawExchange(
      server_->http_port(),
      absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n",
                   "Content-Encoding: gzip\r\nContent-Length: ", body.size(), "\r\n\r\n", body));
  EXPECT_EQ(compressed.rfind("HTTP/1.1 415 ", 0), 0u) << compressed;

  auto plain = Post("/v1/completions", body);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 200) << plain->body;
}

// cpp-httplib's stop() is a no-op until its accept loop runs, which would then run forever:
// Start must return only once it runs, so that a Stop at once (a failed start of a later
// component, a signal during start-up) returns. Run in a child that a watchdog ends on a hang.
TEST(HttpListenerTest, StopRightAfterStartReturns) {
  EXPECT_EXIT(
      {
        std::thread([] {
          std::this_thread::sleep_for(std::chrono::seconds(10));
          std::_Exit(3);
        }).detach();
        for (int i = 0; i < 50; ++i) {
          auto listener = HttpListener::Start("test", "127.0.0.1", 0, std::make_unique<httplib::Server>(), 1024);
          if (!listener.ok()) std::_Exit(2);
          (*listener)->Stop();
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(HttpApiTest, DrainingAnswersServiceUnavailable) {
  ASSERT_TRUE(server_->Drain(Clock::now() + std::chrono::seconds(5)).ok());
  auto response = Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503) << response->body;
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
}

// A non-streamed completion whose client leaves (a client timeout) stops taking steps: it is
// cancelled and counted with status 499, long before its max_tokens. Each token of this replica
// takes 20 ms, so the whole answer would take 4 s.
TEST(HttpApiDisconnectTest, ANonStreamedCompletionEndsWhenItsClientLeaves) {
  std::atomic<int> tokens{0};
  testing::NextTokenFn slow = [&tokens, next = testing::HashNextToken(1000)](std::span<const int32_t> context) {
    tokens.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return next(context);
  };
  CoordinatorServerOptions options;
  options.metrics_host = "127.0.0.1";
  options.metrics_port = 0;
  auto server = testing::StartFakeServer(options, slow);
  ASSERT_TRUE(server.ok()) << server.status();
  const auto started = tokens.load();

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>((*server)->http_port()));
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string body = R"({"prompt": "Hello world", "max_tokens": 200, "temperature": 0})";
  const std::string http = absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                        "Content-Type: application/json\r\nContent-Length: ", body.size(),
                                        "\r\n\r\n", body);
  ASSERT_EQ(send(fd, http.data(), http.size(), 0), static_cast<ssize_t>(http.size()));
  const auto until = [](const std::function<bool()>& done) {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!done() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return done();
  };
  ASSERT_TRUE(until([&] { return tokens.load() >= started + 5; })) << "the request never started";
  close(fd);

  httplib::Client metrics("127.0.0.1", (*server)->metrics_port());
  const std::string cancelled = R"(bitfleet_api_http_completions_total{endpoint="completions",status="499"} 1)";
  EXPECT_TRUE(until([&] {
    auto page = metrics.Get("/metrics");
    return page && page->body.find(cancelled) != std::string::npos;
  })) << "the completion was not cancelled";
  const int at_end = tokens.load() - started;
  EXPECT_LT(at_end, 100) << "the request ran on after its client left";
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(tokens.load() - started, at_end) << "steps went on after the cancel";
  (*server)->Shutdown();
}

// A server started with --api-keys: tenants "team-a" and "team-b".
class HttpApiWithKeysTest : public HttpApiTest {
 protected:
  static constexpr char kKeyA[] = "key-of-team-a-0123456789";
  static constexpr char kKeyB[] = "key-of-team-b-0123456789";

  void SetUp() override {
    keys_file_ = ::testing::TempDir() + "/http_api_test_keys.json";
    std::ofstream(keys_file_) << absl::StrCat(R"({"tenants": [{"name": "team-a", "keys": [")", kKeyA,
                                              R"("]}, {"name": "team-b", "keys": [")", kKeyB, R"("]}]})");
    auto keys = ApiKeys::Load(keys_file_);
    ASSERT_TRUE(keys.ok()) << keys.status();
    StartServer(*std::move(keys));
  }
  void TearDown() override {
    HttpApiTest::TearDown();
    std::remove(keys_file_.c_str());
  }

  // Prompt tokens the prefix cache served for `key`'s completion of a fixed 40-byte prompt.
  int CachedTokens(const std::string& key) {
    auto response = Post("/v1/completions", R"({"prompt": "The same long prompt for every tenant here", "max_tokens": 2})",
                         key);
    EXPECT_TRUE(response);
    if (!response) return -1;
    EXPECT_EQ(response->status, 200) << response->body;
    return Json::parse(response->body)["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>();
  }

  std::string keys_file_;
};

TEST_F(HttpApiWithKeysTest, HttpCallsNeedAKeyButHealthDoesNot) {
  for (const std::string& key : {std::string(), std::string("key-of-nobody-0123456789")}) {
    auto response = Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})", key);
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 401) << response->body;
    EXPECT_EQ(response->get_header_value("WWW-Authenticate"), "Bearer");
    EXPECT_EQ(Json::parse(response->body)["error"]["type"], "authentication_error");
  }
  auto models = client_->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  for (const char* path : {"/tokenize", "/detokenize"}) {
    auto refused = Post(path, R"({"prompt": "x", "tokens": [1]})");
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 401) << path;
  }
  auto tokenized = Post("/tokenize", R"({"prompt": "x"})", kKeyA);
  ASSERT_TRUE(tokenized);
  EXPECT_EQ(tokenized->status, 200) << tokenized->body;
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto ok = Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})", kKeyA);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  auto models_with_key = client_->Get("/v1/models", {{"Authorization", absl::StrCat("Bearer ", kKeyB)}});
  ASSERT_TRUE(models_with_key);
  EXPECT_EQ(models_with_key->status, 200);
}

TEST_F(HttpApiWithKeysTest, GrpcCallsNeedAKey) {
  grpc::Status status;
  GrpcAnswerWithKey("Hello", 4, "", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  GrpcAnswerWithKey("Hello", 4, "key-of-nobody-0123456789", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  const auto [text, tokens] = GrpcAnswerWithKey("Hello", 4, kKeyA, &status);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens, 4u);

  auto stub = v1::Inference::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->api_port()),
                                                         grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ModelInfo info;
  EXPECT_EQ(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(HttpApiWithKeysTest, TenantsShareNoCachedPrefix) {
  EXPECT_EQ(CachedTokens(kKeyA), 0);
  EXPECT_GT(CachedTokens(kKeyA), 0);   // the same tenant again: its prompt blocks are cached
  EXPECT_EQ(CachedTokens(kKeyB), 0);   // another tenant: nothing shared
  EXPECT_GT(CachedTokens(kKeyB), 0);
}

}  // namespace
}  // namespace bitfleet::coordinator

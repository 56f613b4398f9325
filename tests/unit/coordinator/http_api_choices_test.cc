// Several streamed choices of one request (OpenAI's "n", a batch of prompts) against a fake
// replica slow enough (20 ms per token and sequence) that the order of events is the order of
// the steps: the choices' chunks come interleaved, as their tokens do, not one choice after
// another.
#include <algorithm>
#include <chrono>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/coordinator_server.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/fake_server.h"

namespace bitfleet::coordinator {
namespace {

using Json = nlohmann::json;

TEST(HttpApiChoicesTest, StreamedChoicesInterleave) {
  testing::NextTokenFn slow = [next = testing::HashNextToken(1000)](std::span<const int32_t> context) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return next(context);
  };
  auto server = testing::StartFakeServer(CoordinatorServerOptions(), slow);
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->http_port());
  client.set_read_timeout(30, 0);
  auto response = client.Post("/v1/completions",
                              R"({"prompt": "Hello world", "n": 3, "max_tokens": 8, "temperature": 0, "stream": true})",
                              "application/json");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  std::vector<int> order;  // the choice index of each chunk, in arrival order
  std::vector<std::string> texts(3);
  std::vector<int> finished(3, 0);
  for (size_t at = 0; (at = response->body.find("data: {", at)) != std::string::npos;) {
    const size_t end = response->body.find("\n\n", at);
    const Json chunk = Json::parse(response->body.substr(at + 6, end - at - 6));
    const Json& choice = chunk["choices"][0];
    const int index = choice["index"].get<int>();
    ASSERT_GE(index, 0);
    ASSERT_LT(index, 3);
    order.push_back(index);
    texts[index] += choice["text"].get<std::string>();
    finished[index] += choice["finish_reason"].is_null() ? 0 : 1;
    at = end;
  }
  EXPECT_EQ(finished, (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(texts[0], texts[1]);  // greedy: the same text each time
  EXPECT_EQ(texts[0], texts[2]);
  // The last choice's first chunk came long (several 60 ms steps) before the first choice ended.
  const auto first_of_last = std::find(order.begin(), order.end(), 2) - order.begin();
  const auto last_of_first = order.rend() - std::find(order.rbegin(), order.rend(), 0) - 1;
  EXPECT_LT(first_of_last, last_of_first) << "the choices streamed one after another";
  EXPECT_NE(response->body.find("data: [DONE]"), std::string::npos);
  (*server)->Shutdown();
}

}  // namespace
}  // namespace bitfleet::coordinator

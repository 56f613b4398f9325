// The fixture of the HTTP API tests: a CoordinatorServer over a FakeExecutor replica in this
// process (fake_server.h), an HTTP client on its OpenAI-compatible port, and the gRPC API's
// answer to compare with.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitfleet/v1/inference.grpc.pb.h"
#include "coordinator/coordinator_server.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/unit/coordinator/fake_server.h"

namespace bitfleet::coordinator {

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(nullptr); }

  void StartServer(std::shared_ptr<const ApiKeys> keys) {
    CoordinatorServerOptions options;
    options.api_keys = std::move(keys);
    auto server = testing::StartFakeServer(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->http_port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->http_port());
    client_->set_read_timeout(30, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  httplib::Result Post(const std::string& path, const std::string& body, const std::string& key = "") {
    httplib::Headers headers;
    if (!key.empty()) headers.emplace("Authorization", absl::StrCat("Bearer ", key));
    return client_->Post(path.c_str(), headers, body, "application/json");
  }

  // The gRPC API's answer to the same greedy prompt: (text, completion tokens).
  std::pair<std::string, uint32_t> GrpcAnswer(const std::string& prompt, uint32_t max_tokens) {
    return GrpcAnswerWithKey(prompt, max_tokens, "");
  }
  std::pair<std::string, uint32_t> GrpcAnswerWithKey(const std::string& prompt, uint32_t max_tokens,
                                                     const std::string& key, grpc::Status* final_status = nullptr) {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->api_port()),
                                       grpc::InsecureChannelCredentials());
    auto stub = v1::Inference::NewStub(channel);
    grpc::ClientContext context;
    if (!key.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", key));
    v1::GenerateRequest request;
    request.set_prompt(prompt);
    request.set_max_tokens(max_tokens);
    request.mutable_sampling()->set_temperature(0);
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse message;
    std::string text;
    uint32_t completion_tokens = 0;
    while (reader->Read(&message)) {
      text += message.text();
      if (message.has_usage()) completion_tokens = message.usage().completion_tokens();
    }
    const grpc::Status status = reader->Finish();
    if (final_status != nullptr) {
      *final_status = status;
    } else {
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
    return {text, completion_tokens};
  }

  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

}  // namespace bitfleet::coordinator

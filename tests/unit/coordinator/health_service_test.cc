// coordinator/health_service.h over a real gRPC server: names start NOT_SERVING, unknown names
// are NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), Watch follows every change, and Shutdown
// ends the watches with NOT_SERVING.
#include "coordinator/health_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace bitfleet::coordinator {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(false);
    health_ = std::make_unique<HealthService>(std::vector<std::string>{"", "svc"});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(health_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = Health::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    health_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // Check's status code and, when OK, the serving status.
  std::pair<grpc::StatusCode, HealthCheckResponse::ServingStatus> Check(const std::string& name) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    HealthCheckRequest request;
    request.set_service(name);
    HealthCheckResponse response;
    const grpc::Status status = stub_->Check(&context, request, &response);
    return {status.error_code(), response.status()};
  }

  // A Watch of `name` on `context` (deadline 20 s).
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> StartWatch(const std::string& name,
                                                                      grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    HealthCheckRequest request;
    request.set_service(name);
    return stub_->Watch(context, request);
  }
  // The next status a watch reads, UNKNOWN when the stream ended.
  static HealthCheckResponse::ServingStatus Next(grpc::ClientReader<HealthCheckResponse>& reader) {
    HealthCheckResponse response;
    return reader.Read(&response) ? response.status() : HealthCheckResponse::UNKNOWN;
  }

  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST_F(HealthServiceTest, NamesStartNotServingAndFollowSet) {
  EXPECT_EQ(Check(""), std::make_pair(grpc::StatusCode::OK, HealthCheckResponse::NOT_SERVING));
  EXPECT_EQ(Check("svc"), std::make_pair(grpc::StatusCode::OK, HealthCheckResponse::NOT_SERVING));
  EXPECT_EQ(Check("other").first, grpc::StatusCode::NOT_FOUND);
  health_->Set("", true);
  health_->Set("other", true);  // never published: ignored
  EXPECT_EQ(Check(""), std::make_pair(grpc::StatusCode::OK, HealthCheckResponse::SERVING));
  EXPECT_EQ(Check("svc"), std::make_pair(grpc::StatusCode::OK, HealthCheckResponse::NOT_SERVING));
  EXPECT_EQ(Check("other").first, grpc::StatusCode::NOT_FOUND);
  health_->Shutdown();
  health_->Set("", true);  // after Shutdown, nothing serves
  EXPECT_EQ(Check(""), std::make_pair(grpc::StatusCode::OK, HealthCheckResponse::NOT_SERVING));
}

TEST_F(HealthServiceTest, WatchFollowsChangesUntilShutdown) {
  grpc::ClientContext context;
  auto reader = StartWatch("svc", &context);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  health_->Set("svc", true);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVING);
  health_->Set("", true);  // another name: no message on this watch
  health_->Set("svc", false);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  health_->Set("svc", true);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVING);
  health_->Shutdown();
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::UNKNOWN);  // the stream ended
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, WatchOfAnUnknownNameSaysSoAndEndsWhenTheClientCancels) {
  grpc::ClientContext context;
  auto reader = StartWatch("other", &context);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVICE_UNKNOWN);
  const auto start = std::chrono::steady_clock::now();
  context.TryCancel();
  HealthCheckResponse response;
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace bitfleet::coordinator

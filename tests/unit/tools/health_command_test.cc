// `bitfleet health` ($BITFLEET_BIN) against an in-process gRPC server running grpc++'s default
// grpc.health.v1 service: what it prints and its exit code for SERVING, NOT_SERVING, an unknown
// service and an unreachable server; --wait until a status flips; $BITFLEET_HEALTH_TARGET.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "bitfleet/v1/inference.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"

namespace bitfleet::tools {
namespace {

struct Result {
  int exit_code = -1;
  std::string output;
};

// Runs `bitfleet health ARGS` (stdout and stderr together).
Result RunHealth(const std::string& args, const std::string& env = "") {
  const char* bin = std::getenv("BITFLEET_BIN");
  Result result;
  const std::string command = env + " " + bin + " health " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[512];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

class HealthCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("BITFLEET_BIN");
    if (bin == nullptr || access(bin, X_OK) != 0) GTEST_SKIP() << "BITFLEET_BIN does not name the bitfleet binary";
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&inference_);  // a synchronous server needs one service of its own
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    health_ = server_->GetHealthCheckService();
    ASSERT_NE(health_, nullptr);
    target_ = "127.0.0.1:" + std::to_string(port_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  v1::Inference::Service inference_;  // every method UNIMPLEMENTED; only health is asked
  std::unique_ptr<grpc::Server> server_;
  grpc::HealthCheckServiceInterface* health_ = nullptr;
  int port_ = 0;
  std::string target_;
};

TEST_F(HealthCommandTest, ServingExitsZero) {
  health_->SetServingStatus("", true);
  const Result r = RunHealth("--target " + target_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "SERVING\n");
}

TEST_F(HealthCommandTest, NotServingExitsOne) {
  health_->SetServingStatus("bitfleet.v1.Inference/replica-1", false);
  const Result r = RunHealth("--target " + target_ + " --service bitfleet.v1.Inference/replica-1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output, "NOT_SERVING\n");
}

TEST_F(HealthCommandTest, UnknownServiceExitsOne) {
  const Result r = RunHealth("--target " + target_ + " --service no.such.Service");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output, "SERVICE_UNKNOWN\n");
}

TEST_F(HealthCommandTest, UnreachableServerExitsOne) {
  const std::string closed = target_;
  server_->Shutdown();
  server_.reset();
  const Result r = RunHealth("--target " + closed + " --timeout 2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("UNREACHABLE: ", 0), 0u) << r.output;
}

TEST_F(HealthCommandTest, WaitsUntilServing) {
  health_->SetServingStatus("svc", false);
  std::thread flip([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    health_->SetServingStatus("svc", true);
  });
  const auto start = std::chrono::steady_clock::now();
  const Result r = RunHealth("--target " + target_ + " --service svc --wait 20");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  flip.join();
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "SERVING\n");
  EXPECT_GE(seconds, 1.4);
  EXPECT_LT(seconds, 15.0);
}

TEST_F(HealthCommandTest, WaitGivesUpWithTheLastAnswer) {
  health_->SetServingStatus("svc", false);
  const Result r = RunHealth("--target " + target_ + " --service svc --wait 1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output, "NOT_SERVING\n");
}

TEST_F(HealthCommandTest, TargetFromEnvironment) {
  health_->SetServingStatus("", true);
  const Result r = RunHealth("", "BITFLEET_HEALTH_TARGET=" + target_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "SERVING\n");
}

}  // namespace
}  // namespace bitfleet::tools

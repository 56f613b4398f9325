// CoordinatorServer with replicas in this process (`serve --in-process`): the executors it takes
// are checked against the options, and with valid ones it serves with no control endpoint and
// no worker registration.
#include "coordinator/coordinator_server.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/worker/runner_test_util.h"

namespace bitfleet::coordinator {
namespace {

using testing::FakeExecutor;
using testing::FakeExecutorOptions;

class CoordinatorServerInProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto path = worker::testing::SynthTinyModel("llama", DType::kF32);
    ASSERT_TRUE(path.ok()) << path.status();
    options_.model = *path;
    options_.listen = "127.0.0.1:0";
    options_.control = "127.0.0.1:0";
    options_.kv_block_size = 16;
  }

  static std::vector<std::unique_ptr<Executor>> Executors(int n, int32_t block_size) {
    FakeExecutorOptions fake;
    fake.block_size = block_size;
    std::vector<std::unique_ptr<Executor>> out;
    for (int i = 0; i < n; ++i) out.push_back(std::make_unique<FakeExecutor>(fake));
    return out;
  }

  CoordinatorServerOptions options_;
};

TEST_F(CoordinatorServerInProcessTest, RefusesExecutorsThatDoNotMatchTheOptions) {
  auto two_for_one = CoordinatorServer::Start(options_, Executors(2, 16));
  EXPECT_EQ(two_for_one.status().code(), absl::StatusCode::kInvalidArgument) << two_for_one.status();

  auto other_block_size = CoordinatorServer::Start(options_, Executors(1, 4));
  EXPECT_EQ(other_block_size.status().code(), absl::StatusCode::kInvalidArgument) << other_block_size.status();

  CoordinatorServerOptions tp2 = options_;
  tp2.tensor_parallel = 2;
  auto at_tp2 = CoordinatorServer::Start(tp2, Executors(1, 16));
  EXPECT_EQ(at_tp2.status().code(), absl::StatusCode::kInvalidArgument) << at_tp2.status();
}

TEST_F(CoordinatorServerInProcessTest, ServesWithoutAControlEndpointOrWorkers) {
  auto server = CoordinatorServer::Start(options_, Executors(1, 16));
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->control_port(), 0);
  EXPECT_GT((*server)->api_port(), 0);
  EXPECT_EQ((*server)->replica_registrations(0), 1);
  // The scheduler takes the replica into service on its next poll; nothing registers.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(*server)->serving() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE((*server)->serving());
  EXPECT_EQ((*server)->healthy_replicas(), 1);
  (*server)->Shutdown();
}

// A port in use refuses the start (gRPC would otherwise bind it again with SO_REUSEPORT and take
// a share of the first server's connections).
TEST_F(CoordinatorServerInProcessTest, ATakenPortRefusesTheStart) {
  auto first = CoordinatorServer::Start(options_, Executors(1, 16));
  ASSERT_TRUE(first.ok()) << first.status();
  CoordinatorServerOptions same_port = options_;
  same_port.listen = "127.0.0.1:" + std::to_string((*first)->api_port());
  auto second = CoordinatorServer::Start(same_port, Executors(1, 16));
  ASSERT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_NE(std::string(second.status().message()).find("cannot listen on " + same_port.listen), std::string::npos)
      << second.status();
  (*first)->Shutdown();
}

// The same for the HTTP API's port (cpp-httplib's default options bind with SO_REUSEPORT too).
TEST_F(CoordinatorServerInProcessTest, ATakenHttpPortRefusesTheStart) {
  options_.http_host = "127.0.0.1";
  options_.http_port = 0;
  auto first = CoordinatorServer::Start(options_, Executors(1, 16));
  ASSERT_TRUE(first.ok()) << first.status();
  CoordinatorServerOptions same_port = options_;
  same_port.http_port = (*first)->http_port();
  auto second = CoordinatorServer::Start(same_port, Executors(1, 16));
  ASSERT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_NE(std::string(second.status().message()).find(absl::StrCat("cannot bind 127.0.0.1:", same_port.http_port)),
            std::string::npos)
      << second.status();
  (*first)->Shutdown();
}

}  // namespace
}  // namespace bitfleet::coordinator

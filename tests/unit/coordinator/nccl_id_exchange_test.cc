// The NCCL id relay for independent-pod TP groups (control.proto ExchangeNcclId): the board's
// rules directly (NcclIdRelay), then the whole exchange over loopback gRPC between the
// coordinator's ControlService and the worker's ExchangeNcclId, at TP=3. Bytes only: no GPU.
#include <unistd.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/control_service.h"
#include "coordinator/nccl_id_relay.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "worker/nccl_bootstrap.h"

namespace bitfleet::coordinator {
namespace {

using namespace std::chrono_literals;
using Clock = NcclIdRelay::Clock;

std::string Id(char fill) { return std::string(128, fill); }

TEST(NcclIdRelay, EveryRankTakesRankZerosIdOnce) {
  NcclIdRelay relay(/*replicas=*/2, /*world_size=*/3);
  // Rank 1 waits before anything is posted; rank 2 of the other replica never gets this id.
  auto rank1 = std::async(std::launch::async, [&] { return relay.Take(0, 1, Clock::now() + 5s, {}); });
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(relay.Post(0, Id('a')).ok());
  auto got1 = rank1.get();
  ASSERT_TRUE(got1.ok()) << got1.status();
  EXPECT_EQ(*got1, Id('a'));
  EXPECT_TRUE(absl::IsDeadlineExceeded(relay.Take(1, 2, Clock::now() + 150ms, {}).status()));
  // Rank 1 asking again (a restarted process) waits for the next post.
  EXPECT_TRUE(absl::IsDeadlineExceeded(relay.Take(0, 1, Clock::now() + 150ms, {}).status()));
  auto got2 = relay.Take(0, 2, Clock::now() + 1s, {});
  ASSERT_TRUE(got2.ok()) << got2.status();
  EXPECT_EQ(*got2, Id('a'));
  // A new incarnation's id replaces the old one for every rank.
  ASSERT_TRUE(relay.Post(0, Id('b')).ok());
  EXPECT_EQ(relay.Take(0, 1, Clock::now() + 1s, {}).value_or(""), Id('b'));
  ASSERT_TRUE(relay.Post(0, Id('c')).ok());
  EXPECT_EQ(relay.Take(0, 2, Clock::now() + 1s, {}).value_or(""), Id('c'));
  EXPECT_EQ(relay.Take(0, 1, Clock::now() + 1s, {}).value_or(""), Id('c'));
}

TEST(NcclIdRelay, BadArgumentsCancelAndClose) {
  NcclIdRelay relay(1, 2);
  EXPECT_TRUE(absl::IsInvalidArgument(relay.Post(1, Id('a'))));
  EXPECT_TRUE(absl::IsInvalidArgument(relay.Take(0, 0, Clock::now() + 1s, {}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(relay.Take(0, 2, Clock::now() + 1s, {}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(relay.Take(-1, 1, Clock::now() + 1s, {}).status()));
  EXPECT_TRUE(absl::IsCancelled(relay.Take(0, 1, Clock::now() + 5s, [] { return true; }).status()));
  auto waiting = std::async(std::launch::async, [&] { return relay.Take(0, 1, Clock::now() + 30s, {}); });
  std::this_thread::sleep_for(100ms);
  const Clock::time_point closed_at = Clock::now();
  relay.Close();
  EXPECT_TRUE(absl::IsUnavailable(waiting.get().status()));
  EXPECT_LT(Clock::now() - closed_at, 2s);
  EXPECT_TRUE(absl::IsUnavailable(relay.Take(0, 1, Clock::now() + 1s, {}).status()));
}

class NcclIdExchangeTest : public ::testing::Test {
 protected:
  // Serves a ControlService for 1 replica at TP=3 on `address` (the default: any free loopback
  // port), which Exchange then targets.
  void StartServer(const std::string& address = "127.0.0.1:0") {
    ControlServiceOptions options;
    options.replicas = 1;
    options.tensor_parallel = 3;
    service_ = std::make_unique<ControlService>(options, nullptr);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    target_ = address.starts_with("unix:") ? address : "127.0.0.1:" + std::to_string(port);
    service_->Start();
  }
  void StopServer() {
    if (service_) service_->Stop();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 2s);
    server_.reset();
    service_.reset();
  }
  void TearDown() override { StopServer(); }

  worker::NcclIdExchange Exchange(int rank, std::string id = "", std::chrono::milliseconds timeout = 10s) {
    worker::NcclIdExchange x;
    x.coordinator = target_;
    x.replica = 0;
    x.rank = rank;
    x.world_size = 3;
    x.unique_id = std::move(id);
    x.timeout = timeout;
    return x;
  }

  std::string target_;
  std::unique_ptr<ControlService> service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(NcclIdExchangeTest, RanksThatAskFirstGetRankZerosBytes) {
  StartServer();
  std::string id(128, '\0');
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<char>(i * 37);  // NUL bytes included
  auto rank1 = std::async(std::launch::async, [&] { return worker::ExchangeNcclId(Exchange(1)); });
  auto rank2 = std::async(std::launch::async, [&] { return worker::ExchangeNcclId(Exchange(2)); });
  std::this_thread::sleep_for(300ms);
  auto rank0 = worker::ExchangeNcclId(Exchange(0, id));
  ASSERT_TRUE(rank0.ok()) << rank0.status();
  EXPECT_EQ(*rank0, id);
  for (auto* f : {&rank1, &rank2}) {
    auto got = f->get();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, id);
  }
}

TEST_F(NcclIdExchangeTest, RefusedRequestsAndTimeouts) {
  StartServer();
  worker::NcclIdExchange wrong_size = Exchange(1);
  wrong_size.world_size = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(worker::ExchangeNcclId(wrong_size).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(worker::ExchangeNcclId(Exchange(0, "short")).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(worker::ExchangeNcclId(Exchange(1, Id('x'))).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(worker::ExchangeNcclId(Exchange(3)).status()));
  worker::NcclIdExchange other_replica = Exchange(0, Id('x'));
  other_replica.replica = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(worker::ExchangeNcclId(other_replica).status()));
  // Nobody posts: the waiting rank gives up at its own timeout.
  const Clock::time_point start = Clock::now();
  EXPECT_TRUE(absl::IsDeadlineExceeded(worker::ExchangeNcclId(Exchange(2, "", 400ms)).status()));
  EXPECT_LT(Clock::now() - start, 3s);
}

// The address is a Unix socket of this process: a loopback port freed and bound again could be
// taken meanwhile by another test's server (gRPC binds with SO_REUSEPORT), whose answers would
// then be UNIMPLEMENTED (seen once in CI).
TEST_F(NcclIdExchangeTest, WorkersStartedBeforeTheCoordinatorRetry) {
  const std::string address = absl::StrCat("unix:", ::testing::TempDir(), "bitfleet-nccl-id-", getpid(), ".sock");
  target_ = address;  // nothing listens there yet
  auto rank1 = std::async(std::launch::async, [&] { return worker::ExchangeNcclId(Exchange(1)); });
  std::this_thread::sleep_for(1200ms);
  StartServer(address);
  auto rank0 = worker::ExchangeNcclId(Exchange(0, Id('z')));
  ASSERT_TRUE(rank0.ok()) << rank0.status();
  auto got = rank1.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Id('z'));
}

TEST_F(NcclIdExchangeTest, StoppingTheServiceEndsTheWait) {
  StartServer();
  auto rank1 = std::async(std::launch::async, [&] { return worker::ExchangeNcclId(Exchange(1, "", 2s)); });
  std::this_thread::sleep_for(300ms);
  service_->Stop();
  // The coordinator going away is UNAVAILABLE, which the worker retries until its timeout.
  const auto status = rank1.get().status();
  EXPECT_TRUE(absl::IsDeadlineExceeded(status) || absl::IsUnavailable(status)) << status;
}

}  // namespace
}  // namespace bitfleet::coordinator

// The HTTP API's threads and listen backlog: by default every request the scheduler can hold
// gets a thread, so more concurrent completions than the old 64 threads all reach the scheduler
// (its queue and its batch) instead of waiting unseen in cpp-httplib's queue; and a burst of 80
// connects is taken at once (cpp-httplib's backlog of 5 made most wait for SYN retries).
#include <atomic>
#include <chrono>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/coordinator_server.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/fake_server.h"

namespace bitfleet::coordinator {
namespace {

TEST(HttpApiThreadsTest, TheDefaultCoversEveryRequestTheSchedulerHolds) {
  CoordinatorServerOptions options;
  EXPECT_EQ(HttpThreadsFor(options), 256 + 64);
  options.replicas = 3;
  options.max_queued_requests = 10;
  EXPECT_EQ(HttpThreadsFor(options), 10 + 3 * 64);
  options.max_queued_requests = 100000;
  EXPECT_EQ(HttpThreadsFor(options), 4096);
}

// 80 concurrent completions while the replica's steps are held, the admission queue holding 70:
// with a thread for every request the scheduler can hold, all 80 reach it and the ones past the
// queue get their 429 at once. With the old 64 threads, 64 reached it (none refused: the queue
// had room) and 16 waited for a thread, unseen, until steps moved again.
TEST(HttpApiThreadsTest, RequestsPastTheQueueAreRefusedNotKeptWaiting) {
  std::atomic<bool> release{false};
  testing::NextTokenFn held = [&release, next = testing::HashNextToken(1000)](std::span<const int32_t> context) {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return next(context);
  };
  CoordinatorServerOptions options;
  options.max_queued_requests = 70;
  auto server = testing::StartFakeServer(options, held);
  ASSERT_TRUE(server.ok()) << server.status();
  constexpr int kClients = 80;
  std::atomic<int> refused{0};
  std::vector<int> status(kClients, -1);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, port = (*server)->http_port(), i] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(60, 0);
      auto response = client.Post(
          "/v1/completions", absl::StrCat(R"({"prompt": "Story )", i, R"(", "max_tokens": 2, "temperature": 0})"),
          "application/json");
      status[i] = response ? response->status : -1;
      if (status[i] == 429) ++refused;
    });
  }
  // At most 8 were admitted to the held step before the queue filled: at least 2 are past it.
  // Wait for the refusals to settle (500 ms without a new one).
  int refused_while_held = 0;
  for (int poll = 0, quiet = 0; poll < 2000 && (refused_while_held < 2 || quiet < 50); ++poll) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const int now = refused.load();
    quiet = now == refused_while_held ? quiet + 1 : 0;
    refused_while_held = now;
  }
  release = true;
  for (std::thread& t : clients) t.join();
  EXPECT_GE(refused_while_held, 2) << "requests past the queue waited for an HTTP thread";
  EXPECT_EQ(refused.load(), refused_while_held);
  for (int i = 0; i < kClients; ++i) EXPECT_TRUE(status[i] == 200 || status[i] == 429) << i << ": " << status[i];
  (*server)->Shutdown();
}

}  // namespace
}  // namespace bitfleet::coordinator

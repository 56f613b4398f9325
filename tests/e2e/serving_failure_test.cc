// Serving under failure and load, end to end, on a slower synthesized model (llama "small",
// q4_0: about 10 ms per token on one thread, so requests stay in flight long enough to act on):
// client cancel and deadline free the sequence; SIGTERM drains in-flight requests and exits 0,
// a second SIGTERM ends the drain at once;
// a full admission queue answers RESOURCE_EXHAUSTED and the server keeps serving; health stays
// NOT_SERVING until the workers register; killing a worker rank ends in-flight requests with
// UNAVAILABLE within seconds while the coordinator keeps answering health; a rank frozen while
// its group is idle still ends the group; serve relaunches a replica whose workers died, and one
// whose worker is stuck in a step; a failed or stuck replica of serve --in-process ends its
// request and serve.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/e2e/engine_test_assets.h"
#include "tests/e2e/serving_harness.h"

namespace bitfleet::e2e {
namespace {

using namespace std::chrono_literals;
using Health = grpc::health::v1::HealthCheckResponse;
using Clock = std::chrono::steady_clock;

// The slow model, under a name private to the calling test (so WorkerPids finds only its
// workers).
StatusOr<std::string> SlowModel() {
  BF_ASSIGN_OR_RETURN(std::string shared, SynthModel(::testing::TempDir(), "llama", "small", "q4_0", 5));
  return PrivateCopy(shared, ::testing::UnitTest::GetInstance()->current_test_info()->name());
}

#define SLOW_MODEL_OR_SKIP(var)                                               \
  auto var##_or = SlowModel();                                                \
  if (absl::IsNotFound(var##_or.status())) GTEST_SKIP() << var##_or.status(); \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status();                            \
  const std::string var = *var##_or

#define SERVE_OR_SKIP(var, ...)                                               \
  auto var##_or = StartServe(__VA_ARGS__);                                    \
  if (absl::IsNotFound(var##_or.status())) GTEST_SKIP() << var##_or.status(); \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status();                            \
  Served& var = **var##_or

// Starts a long greedy request on its own thread; `first_token` is set once a token arrived.
std::future<GenerateOutcome> LongRequest(Client& client, std::atomic<bool>& first_token, uint32_t tokens = 400) {
  return std::async(std::launch::async, [&client, &first_token, tokens] {
    return client.Generate(GreedyRequest({1, 2, 3, 4}, tokens), 120s, [&](const v1::GenerateResponse& m) {
      if (m.token_ids_size() > 0) first_token = true;
      return true;
    });
  });
}

TEST(ServeFailureTest, ClientCancelAndDeadlineFreeTheSequence) {
  SLOW_MODEL_OR_SKIP(model);
  SERVE_OR_SKIP(served, model, 1, "serve-cancel");
  auto baseline = MetricValue(served.Metrics(), "bitfleet_running_sequences");
  ASSERT_TRUE(baseline.ok()) << served.Metrics();
  EXPECT_EQ(*baseline, 0.0);
  int messages = 0;
  const GenerateOutcome cancelled = served.client->Generate(
      GreedyRequest({1, 2, 3}, 400), 60s, [&](const v1::GenerateResponse&) { return ++messages < 3; });
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED) << cancelled.status.error_message();
  EXPECT_LT(cancelled.tokens.size(), 400u);
  const GenerateOutcome expired = served.client->Generate(GreedyRequest({1, 2, 4}, 400), 500ms);
  EXPECT_EQ(expired.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << expired.status.error_message();
  EXPECT_LT(expired.tokens.size(), 400u);
  // Both sequences leave the batch and give their blocks back: the metrics return to baseline.
  const bool freed = WaitUntil(
      [&] {
        const std::string text = served.Metrics();
        auto running = MetricValue(text, "bitfleet_running_sequences");
        auto used = MetricValue(text, "bitfleet_kv_blocks{replica=\"0\",state=\"used\"}");
        return running.ok() && *running == 0 && used.ok() && *used == 0;
      },
      10s);
  EXPECT_TRUE(freed) << served.Metrics();
  EXPECT_TRUE(served.client->Generate(GreedyRequest({1, 2}, 4), 30s).status.ok());
  served.process->Signal(SIGTERM);
  EXPECT_EQ(served.process->Wait(30s).value_or(-1), 0);
}

TEST(ServeFailureTest, SigtermDrainsInFlightRequestsAndExitsZero) {
  SLOW_MODEL_OR_SKIP(model);
  SERVE_OR_SKIP(served, model, 1, "serve-drain");
  std::atomic<bool> first{false};
  auto in_flight = LongRequest(*served.client, first, 60);
  ASSERT_TRUE(WaitUntil([&] { return first.load(); }, 30s));
  served.process->Signal(SIGTERM);
  // Draining: health turns NOT_SERVING at once, but the request in flight finishes normally.
  const GenerateOutcome out = in_flight.get();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens.size(), 60u);
  EXPECT_EQ(out.finish, v1::FINISH_REASON_LENGTH);
  auto code = served.process->Wait(30s);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << served.process->Log();
  EXPECT_TRUE(WorkerPids(model).empty()) << "workers left behind";
  EXPECT_FALSE(std::ifstream(served.ports_file).good()) << "its --ports-file outlived it";
}

// serve --in-process cannot restart its replica: a step that fails (BITFLEET_FAULT_INJECT
// "error", as a device after a sticky error) ends the request in flight with UNAVAILABLE, and
// serve exits 1 within seconds so that its supervisor (Kubernetes, systemd) restarts it.
TEST(ServeFailureTest, InProcessReplicaThatFailsEndsItsRequestAndServeExitsOne) {
  SLOW_MODEL_OR_SKIP(model);
  setenv("BITFLEET_FAULT_INJECT", "0:6:error", 1);  // step 0: the prompt; steps 1..: decode
  auto started = StartServe(model, 1, "serve-in-process-fault", {"--in-process"});
  unsetenv("BITFLEET_FAULT_INJECT");
  if (absl::IsNotFound(started.status())) GTEST_SKIP() << started.status();
  ASSERT_TRUE(started.ok()) << started.status();
  Served& served = **started;
  const GenerateOutcome out = served.client->Generate(GreedyRequest({1, 2, 3}, 40), 30s);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
  EXPECT_EQ(out.tokens.size(), 6u);  // the prompt step's token and five decode steps' tokens
  auto code = served.process->Wait(15s);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1) << served.process->Log();
  EXPECT_NE(served.process->Log().find("fault injection: rank 0 fails"), std::string::npos)
      << served.process->Log();
}

// serve --in-process cannot interrupt a step that never returns (BITFLEET_FAULT_INJECT "hang"):
// past --step-timeout it exits 1 for its supervisor, instead of serving NOT_SERVING forever or
// hanging its drain; the request in flight ends UNAVAILABLE with the connection.
TEST(ServeFailureTest, InProcessStepPastItsTimeoutEndsServeWithOne) {
  SLOW_MODEL_OR_SKIP(model);
  setenv("BITFLEET_FAULT_INJECT", "0:3:hang", 1);
  auto started = StartServe(model, 1, "serve-in-process-hang", {"--in-process", "--step-timeout", "1"});
  unsetenv("BITFLEET_FAULT_INJECT");
  if (absl::IsNotFound(started.status())) GTEST_SKIP() << started.status();
  ASSERT_TRUE(started.ok()) << started.status();
  Served& served = **started;
  const Clock::time_point sent = Clock::now();
  const GenerateOutcome out = served.client->Generate(GreedyRequest({1, 2, 3}, 40), 30s);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
  EXPECT_EQ(out.tokens.size(), 3u);  // steps 0..2; step 3 hangs
  auto code = served.process->Wait(15s);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1) << served.process->Log();
  EXPECT_LT(Clock::now() - sent, 10s);
  EXPECT_NE(served.process->Log().find("past --step-timeout"), std::string::npos) << served.process->Log();
}

TEST(ServeFailureTest, SecondSignalEndsTheDrainAtOnce) {
  SLOW_MODEL_OR_SKIP(model);
  SERVE_OR_SKIP(served, model, 1, "serve-drain-twice", {"--drain-timeout", "600"});
  std::atomic<bool> first{false};
  auto in_flight = LongRequest(*served.client, first, 500);  // seconds of decoding (context 512)
  if (!WaitUntil([&] { return first.load(); }, 30s)) {
    FAIL() << "no token: " << in_flight.get().status.error_message();
  }
  served.process->Signal(SIGTERM);  // drain: would wait for the whole request
  std::this_thread::sleep_for(300ms);
  const Clock::time_point second = Clock::now();
  served.process->Signal(SIGTERM);  // ends the drain now
  const GenerateOutcome out = in_flight.get();
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
  EXPECT_LT(out.tokens.size(), 500u);
  auto code = served.process->Wait(30s);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << served.process->Log();
  EXPECT_LT(Clock::now() - second, 10s) << "the second signal did not cut the drain short";
  EXPECT_TRUE(WorkerPids(model).empty()) << "workers left behind";
}

TEST(ServeFailureTest, FullQueueGivesResourceExhaustedAndTheServerKeepsServing) {
  SLOW_MODEL_OR_SKIP(model);
  SERVE_OR_SKIP(served, model, 1, "serve-overload", {"--max-queue", "2", "--max-step-sequences", "2"});
  constexpr int kRequests = 12;
  std::vector<std::future<GenerateOutcome>> outcomes;
  for (int i = 0; i < kRequests; ++i) {
    outcomes.push_back(std::async(std::launch::async, [&, i] {
      return served.client->Generate(GreedyRequest({1, 5 + i, 7}, 40), 120s);
    }));
  }
  int ok = 0, exhausted = 0;
  for (auto& f : outcomes) {
    const GenerateOutcome out = f.get();
    if (out.status.ok()) {
      ++ok;
      EXPECT_EQ(out.tokens.size(), 40u);
    } else {
      EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << out.status.error_message();
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(exhausted, 1);
  EXPECT_TRUE(served.client->Generate(GreedyRequest({1, 2}, 8), 60s).status.ok());
  EXPECT_EQ(served.client->Health(), Health::SERVING);
  served.process->Signal(SIGTERM);
  EXPECT_EQ(served.process->Wait(30s).value_or(-1), 0);
}

// Coordinator and workers as separate processes (workers under mpirun at TP > 1), the
// coordinator failing a silent rank after 2 s.
struct Cluster {
  std::unique_ptr<Process> coordinator;
  std::unique_ptr<Process> workers;
  std::unique_ptr<Client> client;
};

// Starts the coordinator, checks it refuses work before any worker registered, then starts the
// group and waits for SERVING.
void StartCluster(const std::string& bin, const std::string& model, int tp, const std::string& name,
                  Cluster* cluster) {
  const std::string log = ::testing::TempDir() + "/" + name;
  const std::string ports_file = log + ".ports.json";
  std::remove(ports_file.c_str());
  auto coordinator = Process::Start({bin, "coordinator", "--model", model, "--listen", "127.0.0.1:0", "--control",
                                     "127.0.0.1:0", "--ports-file", ports_file, "--tp", std::to_string(tp), "--ctx",
                                     "512", "--heartbeat-ms", "100", "--heartbeat-timeout-ms", "2000"},
                                    log + "-coordinator.log");
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  cluster->coordinator = std::move(*coordinator);
  Process& coord = *cluster->coordinator;
  auto ports = WaitForPortsFile(ports_file, coord, 30s);
  ASSERT_TRUE(ports.ok()) << ports.status();
  const int port = ports->api;
  const int control = ports->control;
  cluster->client = std::make_unique<Client>("ipv4:127.0.0.1:" + std::to_string(port));
  Client& client = *cluster->client;
  grpc::Status health_call;
  ASSERT_TRUE(WaitUntil([&] { return client.Health("", &health_call) != Health::UNKNOWN || coord.Exited(); }, 30s))
      << health_call.error_message();
  // No workers yet: NOT_SERVING, and a request is refused with UNAVAILABLE.
  EXPECT_EQ(client.Health(), Health::NOT_SERVING);
  EXPECT_EQ(client.Generate(GreedyRequest({1, 2}, 4), 10s).status.error_code(), grpc::StatusCode::UNAVAILABLE);

  std::vector<std::string> argv = tp > 1 ? MpirunPrefix(tp) : std::vector<std::string>{};
  for (const std::string& a : {bin, std::string("worker"), std::string("--coordinator"),
                               "127.0.0.1:" + std::to_string(control), std::string("--model"), model,
                               std::string("--threads"), std::string("1"), std::string("--ctx"), std::string("512")}) {
    argv.push_back(a);
  }
  auto workers = Process::Start(argv, log + "-workers.log");
  ASSERT_TRUE(workers.ok()) << workers.status();
  cluster->workers = std::move(*workers);
  ASSERT_TRUE(client.WaitHealth(Health::SERVING, 90s)) << cluster->workers->Log() << coord.Log();
}

class WorkerFailureTest : public ::testing::TestWithParam<int> {};

TEST_P(WorkerFailureTest, HealthWaitsForWorkersAndAKilledRankFailsItsReplica) {
  const int tp = GetParam();
  if (tp > 1 && !HaveMpirun()) GTEST_SKIP() << kNoMpiGroups;
  SLOW_MODEL_OR_SKIP(model);
  auto bin = BitfleetBinary();
  if (!bin.ok()) GTEST_SKIP() << bin.status();
  Cluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartCluster(*bin, model, tp, "worker-failure-tp" + std::to_string(tp), &cluster));
  Client& client = *cluster.client;
  auto expected = GreedyReference(model, {1, 9, 8}, 6, /*stop_at_eog=*/false);
  ASSERT_TRUE(expected.ok());
  const GenerateOutcome short_one = client.Generate(GreedyRequest({1, 9, 8}, 6), 60s);
  ASSERT_TRUE(short_one.status.ok()) << short_one.status.error_message();
  EXPECT_EQ(short_one.tokens, *expected);

  // Kill the last rank while a long request streams.
  std::atomic<bool> first{false};
  auto in_flight = LongRequest(client, first);
  ASSERT_TRUE(WaitUntil([&] { return first.load(); }, 30s));
  std::vector<pid_t> ranks = WorkerPids(model);
  ASSERT_EQ(ranks.size(), static_cast<size_t>(tp));
  const auto killed_at = Clock::now();
  kill(ranks.back(), SIGKILL);
  const GenerateOutcome failed = in_flight.get();
  const auto took = Clock::now() - killed_at;
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::UNAVAILABLE) << failed.status.error_message();
  EXPECT_LT(took, 10s);
  EXPECT_GT(failed.tokens.size(), 0u);
  // The coordinator keeps answering: NOT_SERVING, and new requests are UNAVAILABLE.
  EXPECT_TRUE(client.WaitHealth(Health::NOT_SERVING, 5s));
  EXPECT_EQ(client.Health("bitfleet.v1.Inference/replica-0"), Health::NOT_SERVING);
  EXPECT_EQ(client.Generate(GreedyRequest({1, 2}, 4), 10s).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // The rest of the group goes away too (mpirun tears the job down).
  EXPECT_TRUE(cluster.workers->Wait(30s).ok()) << cluster.workers->Log();

  cluster.coordinator->Signal(SIGTERM);
  auto code = cluster.coordinator->Wait(30s);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << cluster.coordinator->Log();
}

// A rank that freezes (SIGSTOP) while the group is idle: no collective is waiting on it, so
// only the coordinator notices (heartbeat) and ends the other rank's stream. That rank must then
// leave without MPI_Finalize, which would wait for the frozen peer forever, so that mpirun
// ends the job and the launcher can restart it.
TEST(FrozenRankTest, EndsItsIdleGroupSoItCanBeRestarted) {
  if (!HaveMpirun()) GTEST_SKIP() << kNoMpiGroups;
  SLOW_MODEL_OR_SKIP(model);
  auto bin = BitfleetBinary();
  if (!bin.ok()) GTEST_SKIP() << bin.status();
  Cluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartCluster(*bin, model, 2, "worker-frozen-rank", &cluster));
  std::vector<pid_t> ranks = WorkerPids(model);
  ASSERT_EQ(ranks.size(), 2u);
  kill(ranks.back(), SIGSTOP);
  EXPECT_TRUE(cluster.client->WaitHealth(Health::NOT_SERVING, 10s));
  const StatusOr<int> ended = cluster.workers->Wait(30s);
  for (pid_t pid : ranks) kill(pid, SIGKILL);  // whatever is left, frozen or not
  EXPECT_TRUE(ended.ok()) << "the group did not end: " << ended.status() << "\n" << cluster.workers->Log();
  if (ended.ok()) {
    EXPECT_NE(*ended, 0) << cluster.workers->Log();
  }
  cluster.coordinator->Signal(SIGTERM);
  EXPECT_EQ(cluster.coordinator->Wait(30s).value_or(-1), 0) << cluster.coordinator->Log();
}

INSTANTIATE_TEST_SUITE_P(TensorParallel, WorkerFailureTest, ::testing::Values(1, 2),
                         [](const auto& info) { return absl::StrCat("tp", info.param); });

TEST(ServeFailureTest, ServeRelaunchesAReplicaWhoseWorkersDied) {
  SLOW_MODEL_OR_SKIP(model);
  SERVE_OR_SKIP(served, model, 1, "serve-restart", {"--max-restarts", "1", "--restart-delay", "0.5"});
  std::vector<pid_t> ranks = WorkerPids(model);
  ASSERT_EQ(ranks.size(), 1u);
  kill(ranks[0], SIGKILL);
  EXPECT_TRUE(served.client->WaitHealth(Health::NOT_SERVING, 10s));
  EXPECT_TRUE(served.client->WaitHealth(Health::SERVING, 90s)) << served.process->Log();
  const GenerateOutcome out = served.client->Generate(GreedyRequest({1, 2, 3}, 5), 60s);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens.size(), 5u);
  served.process->Signal(SIGTERM);
  EXPECT_EQ(served.process->Wait(30s).value_or(-1), 0) << served.process->Log();
}

// A worker stuck in a step is failed by the step timeout, which ends its request; the stuck
// worker is then ended and serve relaunches the replica, which serves again (its first steps,
// before the injected fault comes round again). Two ways of being stuck, two ways out:
//   "hang"   the step never returns but the process's other threads run: the worker's own
//            watchdog exits once the step outlives the step timeout plus the heartbeat timeout;
//   "freeze" the whole process is stopped (SIGSTOP): serve ends workers whose replica stays out
//            of service while they still exist (SIGTERM, then SIGKILL).
void ExpectStuckReplicaRelaunched(const char* fault, const char* how_it_ended) {
  SLOW_MODEL_OR_SKIP(model);
  setenv("BITFLEET_FAULT_INJECT", fault, 1);
  auto started = StartServe(model, 1, "serve-stuck",
                            {"--step-timeout", "2", "--max-restarts", "1",
                             "--restart-delay", "0.2"});
  unsetenv("BITFLEET_FAULT_INJECT");
  if (absl::IsNotFound(started.status())) GTEST_SKIP() << started.status();
  ASSERT_TRUE(started.ok()) << started.status();
  Served& served = **started;
  const std::vector<pid_t> stuck = WorkerPids(model);
  const GenerateOutcome out = served.client->Generate(GreedyRequest({1, 2, 3}, 40), 30s);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
  EXPECT_EQ(out.tokens.size(), 3u);  // steps 0..2; step 3 is stuck
  EXPECT_TRUE(served.client->WaitHealth(Health::NOT_SERVING, 10s));
  EXPECT_TRUE(served.client->WaitHealth(Health::SERVING, 90s)) << served.process->Log();
  EXPECT_NE(served.process->Log().find(how_it_ended), std::string::npos) << served.process->Log();
  const std::vector<pid_t> now = WorkerPids(model);  // running workers (a zombie has no command line)
  for (pid_t pid : stuck) {
    EXPECT_EQ(std::count(now.begin(), now.end(), pid), 0) << "the stuck worker " << pid << " still runs";
  }
  const GenerateOutcome again = served.client->Generate(GreedyRequest({1, 2, 3}, 2), 60s);
  EXPECT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.tokens.size(), 2u);
  served.process->Signal(SIGTERM);
  EXPECT_EQ(served.process->Wait(30s).value_or(-1), 0) << served.process->Log();
}

TEST(ServeFailureTest, AWorkerHungInAStepEndsItselfAndServeRelaunchesIt) {
  ExpectStuckReplicaRelaunched("0:3:hang", "past the coordinator's step timeout");
}

TEST(ServeFailureTest, ServeEndsAndRelaunchesAFrozenWorker) {
  ExpectStuckReplicaRelaunched("0:3:freeze", "out of service");
}

}  // namespace
}  // namespace bitfleet::e2e

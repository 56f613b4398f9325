// The control plane in one process over loopback gRPC: ControlService + GrpcExecutor on the
// coordinator side, ControlClient on the worker side with a scripted step function. Checks
// registration, plan/result round trips at TP=2, plan rejections, and every way a replica
// fails (disconnect, silence, step error, timeout) ending in-flight steps with UNAVAILABLE
// within a bounded time, then a clean re-registration.
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/control_service.h"
#include "coordinator/step_codec.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "worker/control_client.h"

namespace bitfleet::coordinator {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class CountingObserver : public ReplicaObserver {
 public:
  void OnReplicaReady(int) override { ++ready; }
  void OnReplicaDown(int, const Status&) override { ++down; }
  std::atomic<int> ready{0};
  std::atomic<int> down{0};
};

v1::ModelIdentity TestModel() {
  v1::ModelIdentity m;
  m.set_name("test");
  m.set_architecture("llama");
  m.set_n_vocab(100);
  m.set_file_bytes(1234);
  return m;
}

// Every rank answers token = 7 * (rank + 1) unless told otherwise; rank 0's tokens count.
StatusOr<StepResult> Answer(const StepPlan& plan, int32_t token) {
  StepResult result;
  result.step_id = plan.step_id;
  for (const SequencePlan& seq : plan.sequences) {
    result.sequences.push_back({seq.sequence_id, seq.sample ? token : -1});
  }
  return result;
}

StepPlan OnePlan(uint64_t step_id) {
  StepPlan plan;
  plan.step_id = step_id;
  SequencePlan seq;
  seq.sequence_id = 42;
  seq.tokens = {1, 2, 3};
  seq.block_table = {0};
  plan.sequences.push_back(seq);
  return plan;
}

class ControlPlaneTest : public ::testing::Test {
 protected:
  void StartServer(int tp, ControlTiming timing = {50ms, 600ms, 5s}) {
    ControlServiceOptions options;
    options.replicas = 1;
    options.tensor_parallel = tp;
    options.model = TestModel();
    options.required.kv_block_size = 16;
    options.required.kv_blocks = 8;
    options.timing = timing;
    service_ = std::make_unique<ControlService>(options, &observer_);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    service_->Start();
  }

  void TearDown() override {
    for (auto& c : clients_) c->Stop();
    for (auto& t : threads_) t.join();
    if (service_) service_->Stop();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 2s);
  }

  worker::ControlClientOptions ClientOptions(int rank, int world_size) {
    worker::ControlClientOptions o;
    o.coordinator = "127.0.0.1:" + std::to_string(port_);
    o.connect_timeout = 3s;
    v1::Register& r = o.registration;
    *r.mutable_model() = TestModel();
    r.set_rank(rank);
    r.set_world_size(world_size);
    r.set_replica(0);
    r.mutable_capacity()->set_kv_blocks(8 + rank);
    r.mutable_capacity()->set_kv_block_size(16);
    r.mutable_capacity()->set_max_step_tokens(64);
    r.mutable_capacity()->set_max_step_sequences(4);
    r.mutable_capacity()->set_max_context(128);
    r.mutable_capacity()->set_max_logit_rows(48 - 8 * rank);
    return o;
  }

  // Runs a client on its own thread; the future holds Run's status.
  std::future<Status> Launch(worker::ControlClientOptions options, worker::StepFunction step) {
    clients_.push_back(std::make_unique<worker::ControlClient>(std::move(options)));
    worker::ControlClient* client = clients_.back().get();
    auto promise = std::make_shared<std::promise<Status>>();
    std::future<Status> done = promise->get_future();
    threads_.emplace_back([client, step, promise] { promise->set_value(client->Run(step)); });
    return done;
  }

  Executor& replica() { return *service_->executors()[0]; }

  using RawStream = grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>;
  // A raw stream that registers as rank 0 of 1 and then says nothing more (a hung or frozen
  // process); `registered` gets the coordinator's answer.
  std::unique_ptr<RawStream> RegisterSilentRank(grpc::ClientContext* context, v1::CoordinatorMessage* registered) {
    raw_stub_ = v1::Control::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials()));
    std::unique_ptr<RawStream> stream = raw_stub_->Connect(context);
    v1::WorkerMessage hello;
    *hello.mutable_registration() = ClientOptions(0, 1).registration;
    if (!stream->Write(hello) || !stream->Read(registered)) return nullptr;
    return stream;
  }

  bool WaitHealthy(bool want, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (replica().healthy() == want) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  CountingObserver observer_;
  std::unique_ptr<ControlService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::vector<std::unique_ptr<worker::ControlClient>> clients_;
  std::vector<std::thread> threads_;
  std::unique_ptr<v1::Control::Stub> raw_stub_;
};

TEST_F(ControlPlaneTest, TwoRanksRegisterAndRunPlans) {
  StartServer(2);
  EXPECT_FALSE(replica().healthy());
  std::atomic<int> steps_seen{0};
  auto rank0 = Launch(ClientOptions(0, 2), [&](const StepPlan& p) {
    ++steps_seen;
    EXPECT_EQ(p.sequences.at(0).tokens, (std::vector<int32_t>{1, 2, 3}));
    return Answer(p, 7);
  });
  auto rank1 = Launch(ClientOptions(1, 2), [&](const StepPlan& p) {
    ++steps_seen;
    return Answer(p, 7);
  });
  ASSERT_TRUE(WaitHealthy(true));
  EXPECT_EQ(observer_.ready.load(), 1);
  EXPECT_EQ(replica().kv_blocks(), 8);  // the minimum over the ranks
  EXPECT_EQ(replica().kv_block_size(), 16);
  EXPECT_EQ(replica().max_step_sequences(), 4);
  EXPECT_EQ(replica().max_logit_rows(), 40);
  for (uint64_t step = 1; step <= 5; ++step) {
    StatusOr<StepResult> result = replica().Execute(OnePlan(step));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->step_id, step);
    ASSERT_EQ(result->sequences.size(), 1u);
    EXPECT_EQ(result->sequences[0].sequence_id, 42u);
    EXPECT_EQ(result->sequences[0].token, 7);
  }
  EXPECT_EQ(steps_seen.load(), 10);
  // A drain's shutdown ends both workers cleanly.
  service_->ShutdownWorkers("test done");
  EXPECT_TRUE(rank0.get().ok());
  EXPECT_TRUE(rank1.get().ok());
  EXPECT_TRUE(WaitHealthy(false));
}

TEST_F(ControlPlaneTest, PlanRejectionKeepsTheReplica) {
  StartServer(1);
  auto rank0 = Launch(ClientOptions(0, 1), [](const StepPlan& p) -> StatusOr<StepResult> {
    if (p.step_id == 1) return absl::InvalidArgumentError("block table too short");
    return Answer(p, 3);
  });
  ASSERT_TRUE(WaitHealthy(true));
  StatusOr<StepResult> rejected = replica().Execute(OnePlan(1));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(rejected.status().message()).find("block table"), std::string::npos);
  EXPECT_TRUE(replica().healthy());
  StatusOr<StepResult> ok = replica().Execute(OnePlan(2));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->sequences[0].token, 3);
}

TEST_F(ControlPlaneTest, StepErrorFailsTheReplicaAndTheWorkerExits) {
  StartServer(1);
  auto rank0 = Launch(ClientOptions(0, 1), [](const StepPlan&) -> StatusOr<StepResult> {
    return absl::DeadlineExceededError("all-reduce timed out");
  });
  ASSERT_TRUE(WaitHealthy(true));
  StatusOr<StepResult> failed = replica().Execute(OnePlan(1));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(failed.status().message()).find("all-reduce"), std::string::npos);
  EXPECT_EQ(rank0.get().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(replica().healthy());
  // The observer hears of it on the failing thread, possibly just after Execute returned.
  const auto deadline = Clock::now() + 3s;
  while (observer_.down.load() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(observer_.down.load(), 1);
}

TEST_F(ControlPlaneTest, DisconnectedRankFailsTheInFlightStepQuickly) {
  StartServer(2);
  auto rank0 = Launch(ClientOptions(0, 2), [](const StepPlan& p) { return Answer(p, 1); });
  auto rank1 = Launch(ClientOptions(1, 2), [&](const StepPlan& p) -> StatusOr<StepResult> {
    // Rank 1 "dies" mid-step: its process would vanish; here its client stops.
    clients_[1]->Stop();
    std::this_thread::sleep_for(100ms);
    return Answer(p, 1);
  });
  ASSERT_TRUE(WaitHealthy(true));
  const auto t0 = Clock::now();
  StatusOr<StepResult> failed = replica().Execute(OnePlan(1));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_EQ(rank1.get().code(), absl::StatusCode::kCancelled);
  // Rank 0's stream is cancelled by the coordinator: the group is one failure unit.
  EXPECT_EQ(rank0.get().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(replica().healthy());
}

TEST_F(ControlPlaneTest, SilentRankIsDetectedByHeartbeatTimeout) {
  StartServer(1, {50ms, 500ms, 30s});
  grpc::ClientContext context;
  v1::CoordinatorMessage reply;
  std::unique_ptr<RawStream> stream = RegisterSilentRank(&context, &reply);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(reply.has_registered());
  EXPECT_EQ(reply.registered().heartbeat_timeout_ms(), 500u);
  ASSERT_TRUE(WaitHealthy(true));
  const auto t0 = Clock::now();
  StatusOr<StepResult> failed = replica().Execute(OnePlan(1));  // nobody answers
  const auto waited = Clock::now() - t0;
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(failed.status().message()).find("silent"), std::string::npos) << failed.status();
  EXPECT_GE(waited, 400ms);
  EXPECT_LT(waited, 3s);
  while (stream->Read(&reply)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// A rank that stops reading its stream (a frozen process) while a plan larger than the flow
// control window is written: the plan's write blocks, and the heartbeat must neither wait behind
// it nor stop the silence check, so the replica still fails within the heartbeat timeout.
TEST_F(ControlPlaneTest, PlanWriteBlockedByAFrozenRankStillFailsBySilence) {
  StartServer(1, {50ms, 500ms, 30s});
  grpc::ClientContext context;
  v1::CoordinatorMessage reply;
  std::unique_ptr<RawStream> stream = RegisterSilentRank(&context, &reply);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(WaitHealthy(true));
  // ~16 MB of token ids: far past what HTTP/2 buffers for a reader that never reads.
  StepPlan plan = OnePlan(1);
  plan.sequences[0].tokens.assign(4 << 20, 5);
  auto execute = std::async(std::launch::async, [&] { return replica().Execute(plan); });
  const bool failed_in_time = execute.wait_for(5s) == std::future_status::ready;
  context.TryCancel();  // unblocks the write either way, so the test ends
  EXPECT_TRUE(failed_in_time) << "the blocked plan write hid the silence";
  StatusOr<StepResult> failed = execute.get();
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
}

TEST_F(ControlPlaneTest, StepTimeoutFailsTheReplica) {
  StartServer(1, {50ms, 5s, 300ms});
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto rank0 = Launch(ClientOptions(0, 1), [released](const StepPlan& p) {
    released.wait();  // a hung collective; heartbeats keep flowing
    return Answer(p, 1);
  });
  ASSERT_TRUE(WaitHealthy(true));
  StatusOr<StepResult> failed = replica().Execute(OnePlan(1));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(failed.status().message()).find("longer than"), std::string::npos) << failed.status();
  release.set_value();
  EXPECT_EQ(rank0.get().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ControlPlaneTest, AStepPastTheStepTimeoutCallsTheWorkersWatchdog) {
  // Step timeout 300 ms, heartbeat timeout 600 ms: the watchdog fires once a step has run ~900 ms.
  StartServer(1, {50ms, 600ms, 300ms});
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto fired = std::make_shared<std::promise<std::chrono::milliseconds>>();
  worker::ControlClientOptions options = ClientOptions(0, 1);
  options.on_stuck_step = [fired](std::chrono::milliseconds running) { fired->set_value(running); };
  std::future<std::chrono::milliseconds> stuck = fired->get_future();
  auto rank0 = Launch(options, [released](const StepPlan& p) {
    released.wait();  // a step that never returns on its own
    return Answer(p, 1);
  });
  ASSERT_TRUE(WaitHealthy(true));
  const auto t0 = Clock::now();
  EXPECT_EQ(replica().Execute(OnePlan(1)).status().code(), absl::StatusCode::kUnavailable);
  ASSERT_EQ(stuck.wait_for(5s), std::future_status::ready) << "the watchdog never fired";
  const std::chrono::milliseconds running = stuck.get();
  EXPECT_GE(running, 900ms);
  EXPECT_LT(Clock::now() - t0, 3s);
  release.set_value();
  EXPECT_EQ(rank0.get().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ControlPlaneTest, StepsWithinTheTimeoutNeverCallTheWatchdog) {
  StartServer(1, {50ms, 600ms, 2s});
  std::atomic<bool> fired{false};
  worker::ControlClientOptions options = ClientOptions(0, 1);
  options.on_stuck_step = [&fired](std::chrono::milliseconds) { fired.store(true); };
  auto rank0 = Launch(options, [](const StepPlan& p) {
    std::this_thread::sleep_for(300ms);  // slow, but well within the step timeout
    return Answer(p, 1);
  });
  ASSERT_TRUE(WaitHealthy(true));
  for (uint64_t step = 1; step <= 5; ++step) ASSERT_TRUE(replica().Execute(OnePlan(step)).ok());
  std::this_thread::sleep_for(1s);  // idle, between steps
  EXPECT_FALSE(fired.load());
}

TEST_F(ControlPlaneTest, RefusesMismatchedWorkersWithClearCodes) {
  StartServer(2);
  auto other_model = ClientOptions(0, 2);
  other_model.registration.mutable_model()->set_n_vocab(99);
  EXPECT_EQ(Launch(other_model, nullptr).get().code(), absl::StatusCode::kFailedPrecondition);
  auto wrong_tp = ClientOptions(0, 3);
  EXPECT_EQ(Launch(wrong_tp, nullptr).get().code(), absl::StatusCode::kInvalidArgument);
  auto small = ClientOptions(0, 2);
  small.registration.mutable_capacity()->set_kv_blocks(2);
  EXPECT_EQ(Launch(small, nullptr).get().code(), absl::StatusCode::kFailedPrecondition);
  auto block_size = ClientOptions(0, 2);
  block_size.registration.mutable_capacity()->set_kv_block_size(32);
  EXPECT_EQ(Launch(block_size, nullptr).get().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(replica().healthy());
}

TEST_F(ControlPlaneTest, DuplicateRankIsRefused) {
  StartServer(2);
  auto first = Launch(ClientOptions(0, 2), [](const StepPlan& p) { return Answer(p, 1); });
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(Launch(ClientOptions(0, 2), nullptr).get().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(ControlPlaneTest, RestartedGroupRegistersAsANewIncarnationTheSchedulerCannotMiss) {
  StartServer(1);
  auto first = Launch(ClientOptions(0, 1), [](const StepPlan& p) { return Answer(p, 1); });
  ASSERT_TRUE(WaitHealthy(true));
  ASSERT_TRUE(replica().Execute(OnePlan(1)).ok());
  auto before = service_->replica(0).current();
  const uint64_t first_incarnation = replica().incarnation();
  clients_[0]->Stop();
  EXPECT_EQ(first.get().code(), absl::StatusCode::kCancelled);
  // Wait for the coordinator to see the failure without polling healthy() (that would
  // consume the scheduler's notice), then bring a new worker up.
  const auto deadline = Clock::now() + 3s;
  while (!before->failed() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(before->failed());
  auto second = Launch(ClientOptions(0, 1), [](const StepPlan& p) { return Answer(p, 2); });
  while (service_->replica(0).ready_incarnation() == nullptr && Clock::now() < deadline + 3s) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_NE(service_->replica(0).ready_incarnation(), nullptr);
  EXPECT_NE(service_->replica(0).current(), before);
  EXPECT_EQ(replica().incarnation(), first_incarnation + 1);
  EXPECT_EQ(observer_.ready.load(), 2);
  // The restart happened between two polls: the scheduler still sees one "unhealthy" first.
  EXPECT_FALSE(replica().healthy());
  EXPECT_TRUE(replica().healthy());
  StatusOr<StepResult> result = replica().Execute(OnePlan(2));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->sequences[0].token, 2);
}

TEST_F(ControlPlaneTest, ExecuteWithoutWorkersIsUnavailable) {
  StartServer(1);
  EXPECT_EQ(replica().Execute(OnePlan(1)).status().code(), absl::StatusCode::kUnavailable);
}

// A coordinator that accepts the control stream and reads the registration but never answers
// (wedged, or restarting): registration still ends at the connect timeout.
class MuteControl final : public v1::Control::Service {
 public:
  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override {
    v1::WorkerMessage hello;
    stream->Read(&hello);
    while (!context->IsCancelled()) std::this_thread::sleep_for(10ms);
    return grpc::Status::CANCELLED;
  }
};

TEST(ControlClientTest, RegistrationNeverAnsweredEndsAtTheConnectTimeout) {
  MuteControl mute;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&mute);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  worker::ControlClientOptions options;
  options.coordinator = "127.0.0.1:" + std::to_string(port);
  options.connect_timeout = 1s;
  *options.registration.mutable_model() = TestModel();
  worker::ControlClient client(options);
  const auto t0 = Clock::now();
  const Status status = client.Run([](const StepPlan& p) { return Answer(p, 1); });
  const auto waited = Clock::now() - t0;
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(waited, 5s);
  server->Shutdown(std::chrono::system_clock::now() + 1s);
}

TEST(StepCodecTest, PlansAndResultsSurviveTheWire) {
  StepPlan plan;
  plan.step_id = 9;
  plan.released_sequences = {3, 4};
  SequencePlan seq;
  seq.sequence_id = 77;
  seq.tokens = {5, 6};
  seq.start_pos = 32;
  seq.block_table = {1, 2, 3};
  seq.sample = true;
  seq.sampling.temperature = 0.7f;
  seq.sampling.top_k = 40;
  seq.sampling.top_p = 0.9f;
  seq.sampling.min_p = 0.05f;
  seq.sampling.repeat_penalty = 1.1f;
  seq.sampling.presence_penalty = 0.5f;
  seq.sampling.frequency_penalty = -0.5f;
  seq.sampling.penalty_last_n = -1;
  seq.sampling.seed = 123456789012345ull;
  seq.sampling.logprobs = true;
  seq.sampling.top_logprobs = 5;
  seq.sampling.logit_bias = {{3, -100.0f}, {70000, 2.5f}};
  seq.history = {8, 9};
  seq.sample_index = 17;
  seq.score_tokens = {6};
  plan.sequences.push_back(seq);
  v1::StepPlan wire;
  ToProto(plan, &wire);
  v1::StepPlan reparsed;
  ASSERT_TRUE(reparsed.ParseFromString(wire.SerializeAsString()));
  const StepPlan back = FromProto(reparsed);
  EXPECT_EQ(back.step_id, 9u);
  EXPECT_EQ(back.released_sequences, plan.released_sequences);
  ASSERT_EQ(back.sequences.size(), 1u);
  const SequencePlan& b = back.sequences[0];
  EXPECT_EQ(b.sequence_id, 77u);
  EXPECT_EQ(b.tokens, seq.tokens);
  EXPECT_EQ(b.start_pos, 32);
  EXPECT_EQ(b.block_table, seq.block_table);
  EXPECT_TRUE(b.sample);
  EXPECT_EQ(b.sampling.temperature, 0.7f);
  EXPECT_EQ(b.sampling.top_k, 40);
  EXPECT_EQ(b.sampling.top_p, 0.9f);
  EXPECT_EQ(b.sampling.min_p, 0.05f);
  EXPECT_EQ(b.sampling.repeat_penalty, 1.1f);
  EXPECT_EQ(b.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(b.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(b.sampling.penalty_last_n, -1);
  EXPECT_EQ(b.sampling.seed, 123456789012345ull);
  EXPECT_TRUE(b.sampling.logprobs);
  EXPECT_EQ(b.sampling.top_logprobs, 5);
  EXPECT_EQ(b.sampling.logit_bias, seq.sampling.logit_bias);
  EXPECT_EQ(b.history, seq.history);
  EXPECT_EQ(b.sample_index, 17u);
  EXPECT_EQ(b.score_tokens, seq.score_tokens);

  StepResult result{9, {{77, 1000}, {78, -1}}};
  result.sequences[0].has_logprobs = true;
  result.sequences[0].logprob = -0.25f;
  result.sequences[0].top_logprobs = {{1000, -0.25f}, {3, -1.5f}};
  result.sequences[0].scored = {{-2.5f, {{6, -0.5f}}}};
  v1::StepResult wire_result;
  ToProto(result, &wire_result);
  EXPECT_TRUE(StatusOfResult(wire_result).ok());
  const StepResult result_back = FromProto(wire_result);
  EXPECT_EQ(result_back.step_id, 9u);
  ASSERT_EQ(result_back.sequences.size(), 2u);
  EXPECT_EQ(result_back.sequences[1].sequence_id, 78u);
  EXPECT_EQ(result_back.sequences[1].token, -1);
  EXPECT_FALSE(result_back.sequences[1].has_logprobs);
  const SequenceResult& with_logprobs = result_back.sequences[0];
  EXPECT_TRUE(with_logprobs.has_logprobs);
  EXPECT_EQ(with_logprobs.logprob, -0.25f);
  ASSERT_EQ(with_logprobs.top_logprobs.size(), 2u);
  EXPECT_EQ(with_logprobs.top_logprobs[1].token, 3);
  EXPECT_EQ(with_logprobs.top_logprobs[1].logprob, -1.5f);
  ASSERT_EQ(with_logprobs.scored.size(), 1u);
  EXPECT_EQ(with_logprobs.scored[0].logprob, -2.5f);
  ASSERT_EQ(with_logprobs.scored[0].top_logprobs.size(), 1u);
  EXPECT_EQ(with_logprobs.scored[0].top_logprobs[0].token, 6);
  EXPECT_EQ(with_logprobs.scored[0].top_logprobs[0].logprob, -0.5f);
  EXPECT_TRUE(result_back.sequences[1].scored.empty());

  ErrorToProto(10, absl::ResourceExhaustedError("too many tokens"), &wire_result);
  const Status error = StatusOfResult(wire_result);
  EXPECT_EQ(error.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(error.message(), "too many tokens");
  EXPECT_EQ(StatusCodeFromInt(99), absl::StatusCode::kUnknown);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "y")).code(),
            absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace bitfleet::coordinator

// A CoordinatorServer for front-end tests: the tiny synthetic llama's tokenizer and config, one
// FakeExecutor replica in this process, client ports on loopback (HTTP API included), serving
// when returned.
#pragma once

#include <chrono>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "coordinator/coordinator_server.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/worker/runner_test_util.h"

namespace bitfleet::coordinator::testing {

// `options` adds to the defaults (keys, TLS, ...); model, ports and block size are set here.
// `next` is the replica's model (FakeExecutor's default when null).
inline StatusOr<std::unique_ptr<CoordinatorServer>> StartFakeServer(CoordinatorServerOptions options,
                                                                    NextTokenFn next = nullptr) {
  BF_ASSIGN_OR_RETURN(options.model, worker::testing::SynthTinyModel("llama", DType::kF32));
  options.listen = "127.0.0.1:0";
  options.http_port = 0;
  options.http_host = "127.0.0.1";
  options.kv_block_size = 4;
  std::vector<std::unique_ptr<Executor>> executors;
  executors.push_back(std::make_unique<FakeExecutor>(FakeExecutorOptions{}, std::move(next)));
  BF_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                      CoordinatorServer::Start(options, std::move(executors)));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server->serving() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!server->serving()) return absl::DeadlineExceededError("the fake replica never came into service");
  return server;
}

}  // namespace bitfleet::coordinator::testing

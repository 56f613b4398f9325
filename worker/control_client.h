// The worker's side of the control plane (control.proto, DESIGN.md §7): one rank's long-lived
// Control.Connect stream to the coordinator.
//
// Run() connects, registers and then executes the coordinator's StepPlans in order on the
// calling thread (which must be the thread allowed to drive the rank's communicator: MPI runs
// FUNNELED), answering one StepResult per plan. Two helper threads run beside it: a reader
// (queues plans, records coordinator heartbeats, sees Shutdown and the stream's end) and a
// heartbeat thread (sends heartbeats, and cancels the stream when the coordinator has been
// silent for longer than the heartbeat timeout it announced).
//
// Every rank of a TP group holds its own stream and receives the same plans (rather than rank
// 0 relaying them over the communicator): ranks can be independent processes or pods with no
// MPI at all, the coordinator sees every rank's liveness directly, and the communicator carries
// only activations.
//
// A third helper thread, the step watchdog, calls ControlClientOptions::on_stuck_step when a
// step outlives the coordinator's patience.
//
// Thread-safety: Run once, from one thread; Stop from any thread (a signal watcher).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "bitfleet/v1/control.grpc.pb.h"
#include "coordinator/executor.h"
#include "core/status.h"
#include "grpcpp/client_context.h"

namespace bitfleet::worker {

struct ControlClientOptions {
  std::string coordinator;  // host:port of the coordinator's control endpoint
  v1::Register registration;
  // How long to keep retrying while the coordinator is unreachable or answers UNAVAILABLE
  // (it may start after the workers, or still be tearing down this replica's last incarnation).
  std::chrono::milliseconds connect_timeout{60000};
  // Called once, from a watchdog thread, when a step has run longer than the coordinator's step
  // timeout plus its heartbeat timeout (both announced at registration): the coordinator has
  // failed the replica, and a rank stuck in a step (a kernel or a collective that never returns)
  // would otherwise hold its slot forever. The worker process ends itself here. Null: no watchdog.
  std::function<void(std::chrono::milliseconds running)> on_stuck_step;
};

// Runs one plan on this rank. An error other than INVALID_ARGUMENT / RESOURCE_EXHAUSTED (a plan
// rejected before any collective) means the rank's group is broken.
using StepFunction = std::function<StatusOr<coordinator::StepResult>(const coordinator::StepPlan&)>;

class ControlClient {
 public:
  explicit ControlClient(ControlClientOptions options);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Serves until the coordinator sends Shutdown (OK), Stop() is called (CANCELLED), the stream
  // breaks or the coordinator goes silent (UNAVAILABLE), registration is refused (the
  // coordinator's code: FAILED_PRECONDITION, INVALID_ARGUMENT, ALREADY_EXISTS) or a step fails
  // the group (that step's error, after reporting it to the coordinator).
  Status Run(const StepFunction& step);
  // Makes Run return CANCELLED soon (a step in progress finishes first).
  void Stop();

 private:
  struct Session;
  // One connection attempt: opens the stream and exchanges Register / Registered.
  StatusOr<std::unique_ptr<Session>> Register();
  Status Serve(Session& session, const StepFunction& step);

  const ControlClientOptions options_;
  std::atomic<bool> stop_{false};
  std::mutex session_mu_;
  grpc::ClientContext* active_context_ = nullptr;  // guarded by session_mu_; for Stop()
};

}  // namespace bitfleet::worker

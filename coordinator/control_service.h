// The coordinator's side of the control plane (control.proto, DESIGN.md §7): accepts worker
// registrations on the internal control port, groups ranks into replicas and hands each ready
// replica's GrpcExecutor to the ReplicaObserver (which gives it to the scheduler).
//
// Replica slots: `replicas` RemoteReplica objects (remote_replica.h), the stable Executors the
// scheduler is built with. Each time all ranks of a slot register, a new GrpcExecutor
// incarnation serves it; after a failure, once all the old ranks have disconnected, the next
// Register starts a new incarnation, so a restarted group registers cleanly and never
// inherits the old one's state.
//
// Registration checks, in order: the first message is a Register (INVALID_ARGUMENT), replica and
// rank in range and world_size equal to the configured TP degree (INVALID_ARGUMENT), the same
// model (FAILED_PRECONDITION), capacity at least the configured minimum with the same KV block
// size (FAILED_PRECONDITION), the slot's last incarnation gone (UNAVAILABLE: retry), the rank
// not already connected (ALREADY_EXISTS).
//
// Thread-safety: all methods may be called from any thread. Connect runs on gRPC's threads and
// blocks for the life of the worker's stream.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bitfleet/v1/control.grpc.pb.h"
#include "coordinator/grpc_executor.h"
#include "coordinator/nccl_id_relay.h"
#include "coordinator/remote_replica.h"
#include "core/status.h"

namespace bitfleet::coordinator {

// Told when replicas come and go (health reporting). Called on gRPC or monitor threads, or on
// the scheduler's dispatch thread when a step fails the replica, never with a ControlService
// lock held; must not block.
class ReplicaObserver {
 public:
  virtual ~ReplicaObserver() = default;
  // Every rank of `replica` registered (a new incarnation is serving).
  virtual void OnReplicaReady(int replica) = 0;
  // The incarnation failed or shut down.
  virtual void OnReplicaDown(int replica, const Status& reason) = 0;
};

struct ControlServiceOptions {
  int replicas = 1;
  int tensor_parallel = 1;
  // What every worker must have loaded.
  v1::ModelIdentity model;
  // Minimum capacity per rank; a zero field is not checked. kv_block_size, when set, must match
  // exactly (block ids mean the same token ranges everywhere).
  WorkerCapacity required;
  ControlTiming timing;
};

class ControlService final : public v1::Control::Service {
 public:
  // `observer` may be null; it must outlive the service.
  ControlService(ControlServiceOptions options, ReplicaObserver* observer);
  ~ControlService() override;

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;

  // control.proto ExchangeNcclId, through nccl_relay_ (nccl_id_relay.h). A waiting rank's call
  // lasts at most kMaxNcclIdWait past its arrival, whatever its own deadline.
  grpc::Status ExchangeNcclId(grpc::ServerContext* context, const v1::NcclIdRequest* request,
                              v1::NcclIdReply* reply) override;
  static constexpr std::chrono::minutes kMaxNcclIdWait{10};

  // Starts / stops the monitor thread that heartbeats and checks every replica. Stop also ends
  // every ExchangeNcclId wait (UNAVAILABLE), so the gRPC server can shut down.
  void Start();
  void Stop();
  // Asks every connected worker to exit (after a drain). Their disconnects are then expected.
  void ShutdownWorkers(const std::string& reason);

  const ControlServiceOptions& options() const { return options_; }
  // The stable Executors of the replica slots, in replica order (for Scheduler::Create). Only
  // the scheduler may call their healthy() (remote_replica.h).
  std::vector<Executor*> executors() const;
  RemoteReplica& replica(int index) const { return *replicas_[index]; }
  // Whether `replica`'s current incarnation is healthy.
  bool replica_healthy(int replica) const;
  // Replicas whose current incarnation is healthy.
  int healthy_replicas() const;

 private:
  // Validates a Register against the options (the checks in the header comment, but the last).
  Status CheckRegistration(const v1::Register& registration) const;
  void MonitorLoop();

  const ControlServiceOptions options_;
  ReplicaObserver* const observer_;

  std::vector<std::unique_ptr<RemoteReplica>> replicas_;  // fixed at construction
  NcclIdRelay nccl_relay_;
  std::atomic<bool> shutting_down_{false};

  std::mutex monitor_mu_;
  std::condition_variable monitor_cv_;
  bool monitor_stop_ = false;
  std::thread monitor_;
};

}  // namespace bitfleet::coordinator

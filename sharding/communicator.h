// Collective communication between the ranks of one tensor-parallel group (DESIGN.md §4, §7).
// Activations travel only through a Communicator, never over gRPC. Backends: Open MPI (CPU
// processes), NCCL (GPUs), and an in-process fake (threads) for unit tests.
//
// Contract: every rank of the group calls the same collectives in the same order with the same
// sizes. A collective that cannot complete within the backend's timeout (a dead, hung or
// partitioned peer) returns DEADLINE_EXCEEDED or UNAVAILABLE; the group is then unusable and
// the caller must fail the replica (a TP group is one failure unit).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace bitfleet::sharding {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Backend name for logs and reports ("mpi", "nccl", "fake", "single").
  virtual const char* backend() const = 0;

  // In place: data[i] = sum over ranks of data[i].
  virtual Status AllReduceSum(float* data, size_t count) = 0;
  // In place: data[i] = max over ranks of data[i].
  virtual Status AllReduceMax(float* data, size_t count) = 0;
  // recv holds size() × bytes: rank r's `send` lands at recv + r * bytes.
  virtual Status AllGather(const void* send, size_t bytes, void* recv) = 0;
  // Copies root's `data` to every rank.
  virtual Status Broadcast(void* data, size_t bytes, int root) = 0;
  virtual Status Barrier() = 0;

  // Seconds spent inside collectives since construction (for the "fraction of step time in
  // communication" benchmark figure).
  virtual double seconds_in_collectives() const = 0;
};

// The communicator of a group of one: every collective is the identity. Used when TP=1.
class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "single"; }
  Status AllReduceSum(float*, size_t) override { return absl::OkStatus(); }
  Status AllReduceMax(float*, size_t) override { return absl::OkStatus(); }
  Status AllGather(const void* send, size_t bytes, void* recv) override;
  Status Broadcast(void*, size_t, int root) override;
  Status Barrier() override { return absl::OkStatus(); }
  double seconds_in_collectives() const override { return 0.0; }
};

}  // namespace bitfleet::sharding

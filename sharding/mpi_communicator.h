// Open MPI backend of Communicator for CPU tensor parallelism. Ranks are the processes of
// MPI_COMM_WORLD (started by mpirun). Collectives are non-blocking MPI calls polled against a
// deadline, so a hung or partitioned peer surfaces as DEADLINE_EXCEEDED within `timeout`
// instead of a silent hang; a dead peer is handled by mpirun, which tears the job down.
#pragma once

#include <chrono>
#include <memory>

#include "sharding/communicator.h"

namespace bitfleet::sharding {

// True when this process was started by mpirun/srun (OMPI_COMM_WORLD_SIZE or PMI env set).
bool LaunchedUnderMpi();

// True once any collective of this process timed out. The process then skips MPI_Finalize at
// exit (it would wait forever for the lost peer), so mpirun ends the whole job non-zero.
bool MpiGroupBroken();
// Marks the group broken for a reason found outside a collective (the coordinator failed this
// replica because a peer went silent): the exit then skips MPI_Finalize as after a timeout.
void MarkMpiGroupBroken();
// Tests that deliberately time out and then let the peer catch up call this to exit normally.
void ResetMpiGroupBrokenForTesting();

class MpiCommunicator final : public Communicator {
 public:
  // Initialises MPI once per process (thread level FUNNELED) and duplicates COMM_WORLD.
  static StatusOr<std::unique_ptr<MpiCommunicator>> Create(
      std::chrono::milliseconds timeout = std::chrono::seconds(60));
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  Status AllReduceSum(float* data, size_t count) override;
  Status AllReduceMax(float* data, size_t count) override;
  Status AllGather(const void* send, size_t bytes, void* recv) override;
  Status Broadcast(void* data, size_t bytes, int root) override;
  Status Barrier() override;
  double seconds_in_collectives() const override { return seconds_; }

  // Ends every process of the job (MPI_Abort). For unrecoverable group failures.
  [[noreturn]] void Abort(int exit_code);

 private:
  struct Impl;
  explicit MpiCommunicator(std::unique_ptr<Impl> impl, int rank, int size, std::chrono::milliseconds timeout);
  // Waits for a started request until done or the deadline; names `what` in errors.
  Status Wait(void* request, const char* what);

  std::unique_ptr<Impl> impl_;
  int rank_;
  int size_;
  std::chrono::milliseconds timeout_;
  double seconds_ = 0;
};

}  // namespace bitfleet::sharding

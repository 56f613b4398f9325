// NCCL backend of Communicator for GPU tensor parallelism (DESIGN.md §4, §7). One rank per GPU.
//
// Bootstrap: rank 0 creates an NCCL unique id (NewNcclUniqueId) and every rank passes the same
// id bytes to Create. The bytes reach the other ranks either through another communicator
// (CreateOver: an MpiCommunicator under mpirun, for example) or through the coordinator, which
// relays rank 0's id over the control stream (independent pods).
//
// Buffers: collectives run in place on device memory, on this communicator's stream (its own,
// or the caller's via SetStream so they order after the forward pass's kernels). Host pointers
// are accepted too and staged through a device scratch buffer (slower; for callers without
// device buffers, tests and the CPU runner).
//
// Failure: the communicator is non-blocking (ncclConfig_t.blocking = 0). Init and every
// collective wait with a deadline, polling ncclCommGetAsyncError and the stream. A collective
// that does not finish in time (a dead, hung or partitioned peer) aborts the communicator
// (ncclCommAbort) and returns DEADLINE_EXCEEDED; an asynchronous NCCL error aborts it and returns
// UNAVAILABLE. After either, every call returns UNAVAILABLE: the TP group is one failure unit
// and the caller must fail the replica.
//
// Thread-safety: one thread at a time per communicator (as for every Communicator).
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "sharding/communicator.h"
#include "sharding/nccl_id.h"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace bitfleet::sharding {

// A fresh NCCL unique id (on rank 0), as bytes to relay to the other ranks. It names a
// bootstrap socket on this host, so it is only good for one group. UNAVAILABLE when NCCL fails.
StatusOr<std::string> NewNcclUniqueId();

struct NcclOptions {
  int rank = 0;
  int size = 1;
  // CUDA device of this rank; -1: the node-local rank (sharding/local_rank.h) modulo the visible
  // devices.
  int device = -1;
  std::string unique_id;  // kNcclUniqueIdBytes bytes from NewNcclUniqueId on rank 0
  // Deadline for init (all ranks must join) and for each collective.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

class NcclCommunicator final : public Communicator {
 public:
  // INVALID_ARGUMENT for bad options (checked before touching the GPU), FAILED_PRECONDITION
  // without a usable CUDA device, DEADLINE_EXCEEDED when the group does not form in time,
  // UNAVAILABLE / INTERNAL for NCCL or CUDA errors.
  static StatusOr<std::unique_ptr<NcclCommunicator>> Create(const NcclOptions& options);

  // Rank 0 of `bootstrap` creates the id and broadcasts it over `bootstrap`; every rank then
  // joins with bootstrap's rank and size. All ranks of `bootstrap` must call this together.
  static StatusOr<std::unique_ptr<NcclCommunicator>> CreateOver(Communicator& bootstrap, int device = -1,
                                                                std::chrono::milliseconds timeout =
                                                                    std::chrono::seconds(60));

  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  Status AllReduceSum(float* data, size_t count) override;
  Status AllReduceMax(float* data, size_t count) override;
  Status AllGather(const void* send, size_t bytes, void* recv) override;
  Status Broadcast(void* data, size_t bytes, int root) override;
  Status Barrier() override;
  double seconds_in_collectives() const override { return seconds_; }

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  // Runs later collectives on `stream` (a stream of this communicator's device that outlives
  // their use); nullptr returns to the communicator's own stream.
  void SetStream(cudaStream_t stream) { stream_ = stream != nullptr ? stream : own_stream_; }

  // Deferred mode, for a caller whose data stays on the device and who synchronizes once per
  // step (the CUDA runner): a collective on device buffers returns once NCCL has queued it on
  // the stream, without waiting for it to run, so a step's collectives can be captured into a
  // CUDA graph with its kernels. The caller then calls Synchronize, which waits with the
  // deadline. Collectives that touch host memory, and Barrier, still wait.
  // seconds_in_collectives() then counts the queuing only.
  void set_deferred(bool on) { deferred_ = on; }
  bool deferred() const { return deferred_; }
  // Waits until no NCCL operation is in progress and the stream is idle, within the deadline;
  // fails as a collective does (DEADLINE_EXCEEDED or UNAVAILABLE, and the communicator aborts).
  Status Synchronize();

  // Aborts the communicator now (ncclCommAbort); later calls return UNAVAILABLE. For the
  // replica-failure path: other ranks' pending collectives then fail or time out.
  void Abort();
  bool failed() const { return comm_ == nullptr; }

 private:
  enum class Op { kSum, kMax, kGather, kBroadcast };

  NcclCommunicator(int rank, int size, int device, std::chrono::milliseconds timeout)
      : rank_(rank), size_(size), device_(device), timeout_(timeout) {}
  // Waits until the communicator has no operation in progress and the stream is idle, or the
  // deadline passes (then aborts). `what` names the operation in errors.
  Status Wait(const char* what, bool wait_stream);
  // Aborts and returns `status` (the first failure wins: later calls report UNAVAILABLE).
  Status Fail(Status status);
  // One collective: stages host buffers, enqueues, waits.
  Status Run(Op op, const void* send, void* recv, size_t bytes, int root);
  Status EnsureScratch(size_t bytes);

  ncclComm* comm_ = nullptr;
  int rank_;
  int size_;
  int device_;
  std::chrono::milliseconds timeout_;
  cudaStream_t own_stream_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;  // device staging for host buffers
  size_t scratch_bytes_ = 0;
  bool deferred_ = false;
  double seconds_ = 0;
};

}  // namespace bitfleet::sharding

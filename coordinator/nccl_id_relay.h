// Hands rank 0's ncclUniqueId to the other ranks of its replica (control.proto ExchangeNcclId):
// the bootstrap of an NCCL group whose ranks are independent processes. A pure in-memory board,
// so the rules are testable without gRPC or a GPU:
//   - Post (rank 0) replaces the replica's id with a fresh one; nobody has taken it yet.
//   - Take (rank r > 0) waits until the replica has an id that rank r has not taken, takes it
//     and returns it. Once every rank 1..world_size-1 has taken it the entry is dropped (the
//     id names a one-shot bootstrap socket on rank 0's host).
// Thread-safety: all methods may be called from any thread; Take blocks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"

namespace bitfleet::coordinator {

class NcclIdRelay {
 public:
  using Clock = std::chrono::steady_clock;

  NcclIdRelay(int replicas, int world_size);

  // The id of `replica`'s new incarnation (rank 0's). INVALID_ARGUMENT for a replica out of range.
  Status Post(int replica, std::string unique_id);

  // Waits for an id of `replica` that `rank` has not taken yet, until `deadline`
  // (DEADLINE_EXCEEDED), Close (UNAVAILABLE), or `cancelled` returning true (CANCELLED; polled
  // every 100 ms, may be empty). INVALID_ARGUMENT for a replica or rank out of range or rank 0.
  StatusOr<std::string> Take(int replica, int rank, Clock::time_point deadline,
                             const std::function<bool()>& cancelled);

  // Ends every wait with UNAVAILABLE, now and later (the coordinator is shutting down).
  void Close();

 private:
  struct Entry {
    std::string id;              // empty: nothing posted (or every rank took the last one)
    std::vector<bool> taken;     // by rank
    int remaining = 0;           // ranks that have not taken `id`
  };

  const int world_size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Entry> entries_;  // by replica
  bool closed_ = false;
};

}  // namespace bitfleet::coordinator

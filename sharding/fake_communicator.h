// In-process communicator: N ranks are N threads sharing one FakeGroup. Collectives meet at a
// generation-counted rendezvous, so tests of tensor-parallel code run without MPI. A rank that
// does not arrive within `timeout` makes the others fail with DEADLINE_EXCEEDED, which is how
// tests inject a hung peer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "sharding/communicator.h"

namespace bitfleet::sharding {

class FakeGroup {
 public:
  explicit FakeGroup(int size, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  int size() const { return size_; }
  // The communicator of `rank`; owned by the group, valid while the group lives.
  Communicator* rank(int r) { return ranks_[r].get(); }

 private:
  friend class FakeCommunicator;
  enum class Op { kSum, kMax, kGather, kBroadcast, kBarrier };
  // Every rank deposits its buffer; the last arrival combines and releases everyone.
  Status Collective(int rank, Op op, void* data, size_t bytes, const void* send, int root);

  const int size_;
  const std::chrono::milliseconds timeout_;
  std::vector<std::unique_ptr<Communicator>> ranks_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;
  int arrived_ = 0;
  bool broken_ = false;
  std::vector<void*> buffers_;
  std::vector<const void*> sends_;
};

}  // namespace bitfleet::sharding

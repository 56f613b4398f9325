// A communicator that only knows who it is: rank r of a group of n, with no peers to talk to.
// Lets one process build the shard of any rank (e.g. `bitfleet inspect --tp N --load` measures
// each rank's resident bytes in turn) without starting a group. Loading a shard needs no
// collective; every collective here fails with FAILED_PRECONDITION instead of pretending.
#pragma once

#include "sharding/communicator.h"

namespace bitfleet::sharding {

class DetachedRankCommunicator final : public Communicator {
 public:
  // rank must be in [0, size); size >= 1.
  DetachedRankCommunicator(int rank, int size) : rank_(rank), size_(size) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "detached"; }
  Status AllReduceSum(float*, size_t) override { return Refuse("all-reduce"); }
  Status AllReduceMax(float*, size_t) override { return Refuse("all-reduce"); }
  Status AllGather(const void*, size_t, void*) override { return Refuse("all-gather"); }
  Status Broadcast(void*, size_t, int) override { return Refuse("broadcast"); }
  Status Barrier() override { return Refuse("barrier"); }
  double seconds_in_collectives() const override { return 0.0; }

 private:
  Status Refuse(const char* what) const;

  int rank_;
  int size_;
};

}  // namespace bitfleet::sharding

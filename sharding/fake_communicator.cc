#include "sharding/fake_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace bitfleet::sharding {

class FakeCommunicator final : public Communicator {
 public:
  FakeCommunicator(FakeGroup* group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  const char* backend() const override { return "fake"; }
  Status AllReduceSum(float* data, size_t count) override {
    return Timed(FakeGroup::Op::kSum, data, count * sizeof(float), nullptr, 0);
  }
  Status AllReduceMax(float* data, size_t count) override {
    return Timed(FakeGroup::Op::kMax, data, count * sizeof(float), nullptr, 0);
  }
  Status AllGather(const void* send, size_t bytes, void* recv) override {
    return Timed(FakeGroup::Op::kGather, recv, bytes, send, 0);
  }
  Status Broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= size()) return absl::InvalidArgumentError("broadcast root out of range");
    return Timed(FakeGroup::Op::kBroadcast, data, bytes, nullptr, root);
  }
  Status Barrier() override { return Timed(FakeGroup::Op::kBarrier, nullptr, 0, nullptr, 0); }
  double seconds_in_collectives() const override { return seconds_; }

 private:
  Status Timed(FakeGroup::Op op, void* data, size_t bytes, const void* send, int root) {
    const auto start = std::chrono::steady_clock::now();
    Status status = group_->Collective(rank_, op, data, bytes, send, root);
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return status;
  }
  FakeGroup* group_;
  int rank_;
  double seconds_ = 0;
};

FakeGroup::FakeGroup(int size, std::chrono::milliseconds timeout)
    : size_(size), timeout_(timeout), buffers_(size), sends_(size) {
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<FakeCommunicator>(this, r));
}

Status FakeGroup::Collective(int rank, Op op, void* data, size_t bytes, const void* send, int root) {
  std::unique_lock<std::mutex> lock(mu_);
  if (broken_) return absl::UnavailableError("fake group is broken by an earlier timeout");
  const uint64_t my_generation = generation_;
  buffers_[rank] = data;
  sends_[rank] = send;
  if (++arrived_ == size_) {
    // Last arrival: every buffer is in place; combine, then release the others.
    const size_t count = bytes / sizeof(float);
    switch (op) {
      case Op::kSum:
      case Op::kMax: {
        std::vector<float> acc(static_cast<float*>(buffers_[0]), static_cast<float*>(buffers_[0]) + count);
        for (int r = 1; r < size_; ++r) {
          const float* b = static_cast<const float*>(buffers_[r]);
          for (size_t i = 0; i < count; ++i) acc[i] = op == Op::kSum ? acc[i] + b[i] : std::max(acc[i], b[i]);
        }
        for (int r = 0; r < size_; ++r) std::memcpy(buffers_[r], acc.data(), bytes);
        break;
      }
      case Op::kGather: {
        // Stage every send first: a rank's send may live inside its own receive buffer.
        std::vector<uint8_t> staged(bytes * size_);
        for (int src = 0; src < size_; ++src) std::memcpy(staged.data() + src * bytes, sends_[src], bytes);
        for (int dst = 0; dst < size_; ++dst) std::memcpy(buffers_[dst], staged.data(), staged.size());
        break;
      }
      case Op::kBroadcast:
        for (int r = 0; r < size_; ++r) {
          if (r != root) std::memcpy(buffers_[r], buffers_[root], bytes);
        }
        break;
      case Op::kBarrier:
        break;
    }
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return absl::OkStatus();
  }
  if (!cv_.wait_for(lock, timeout_, [&] { return generation_ != my_generation || broken_; })) {
    broken_ = true;
    cv_.notify_all();
    return absl::DeadlineExceededError(absl::StrCat("rank ", rank, ": collective timed out after ",
                                                    timeout_.count(), " ms waiting for peers"));
  }
  if (broken_ && generation_ == my_generation) return absl::UnavailableError("fake group broken by a peer timeout");
  return absl::OkStatus();
}

}  // namespace bitfleet::sharding

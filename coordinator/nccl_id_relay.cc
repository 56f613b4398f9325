#include "coordinator/nccl_id_relay.h"

#include <utility>

namespace bitfleet::coordinator {

NcclIdRelay::NcclIdRelay(int replicas, int world_size) : world_size_(world_size), entries_(replicas) {}

Status NcclIdRelay::Post(int replica, std::string unique_id) {
  if (replica < 0 || replica >= static_cast<int>(entries_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("replica ", replica, " outside [0, ", entries_.size(), ")"));
  }
  {
    std::lock_guard lock(mu_);
    Entry& e = entries_[replica];
    e.id = std::move(unique_id);
    e.taken.assign(world_size_, false);
    e.taken[0] = true;
    e.remaining = world_size_ - 1;
    if (e.remaining == 0) e.id.clear();  // a group of one has nobody to tell
  }
  cv_.notify_all();
  return absl::OkStatus();
}

StatusOr<std::string> NcclIdRelay::Take(int replica, int rank, Clock::time_point deadline,
                                        const std::function<bool()>& cancelled) {
  if (replica < 0 || replica >= static_cast<int>(entries_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("replica ", replica, " outside [0, ", entries_.size(), ")"));
  }
  if (rank <= 0 || rank >= world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " outside [1, ", world_size_, ") (rank 0 posts)"));
  }
  std::unique_lock lock(mu_);
  Entry& e = entries_[replica];
  for (;;) {
    if (closed_) return absl::UnavailableError("the coordinator is shutting down");
    if (!e.id.empty() && !e.taken[rank]) {
      std::string id = e.id;
      e.taken[rank] = true;
      if (--e.remaining == 0) e.id.clear();
      return id;
    }
    if (cancelled && cancelled()) return absl::CancelledError("the caller went away");
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("replica ", replica, " rank 0 posted no NCCL id in time (is its rank 0 up?)"));
    }
    cv_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)));
  }
}

void NcclIdRelay::Close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

}  // namespace bitfleet::coordinator

#include "sharding/communicator.h"

#include <cstring>

namespace bitfleet::sharding {

Status SingleRankCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  if (bytes > 0 && send != recv) std::memmove(recv, send, bytes);
  return absl::OkStatus();
}

Status SingleRankCommunicator::Broadcast(void*, size_t, int root) {
  if (root != 0) return absl::InvalidArgumentError("broadcast root out of range for a group of one");
  return absl::OkStatus();
}

}  // namespace bitfleet::sharding

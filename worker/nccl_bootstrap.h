// The worker's side of control.proto ExchangeNcclId: how the ranks of a tensor-parallel group
// that are independent processes (pods, no mpirun) agree on one ncclUniqueId before they build
// their NCCL communicator. Rank 0 posts the id it made (sharding::NewNcclUniqueId); every other
// rank receives those bytes through the coordinator. Bytes only: no NCCL or CUDA needed here.
#pragma once

#include <chrono>
#include <string>

#include "core/status.h"

namespace bitfleet::worker {

struct NcclIdExchange {
  std::string coordinator;  // host:port of the coordinator's control endpoint
  int replica = 0;
  int rank = 0;
  int world_size = 1;
  std::string unique_id;  // rank 0: the id to post; others: empty
  // For the whole exchange, including waiting for the coordinator to come up (UNAVAILABLE
  // answers are retried every 500 ms) and, on ranks > 0, for rank 0 to post.
  std::chrono::milliseconds timeout{std::chrono::minutes(2)};
};

// Rank 0: posts the id and returns it. Other ranks: the id rank 0 posted. Errors: the
// coordinator's (INVALID_ARGUMENT for a request it refuses), DEADLINE_EXCEEDED when the
// timeout passes first.
StatusOr<std::string> ExchangeNcclId(const NcclIdExchange& exchange);

}  // namespace bitfleet::worker

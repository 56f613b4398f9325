// The size of an NCCL unique id, without NCCL's or CUDA's headers: the coordinator relays ids
// (control.proto ExchangeNcclId) in builds that have neither.
#pragma once

#include <cstddef>

namespace bitfleet::sharding {

// NCCL_UNIQUE_ID_BYTES (nccl.h); sharding/nccl_communicator.cc checks that they agree.
inline constexpr size_t kNcclUniqueIdBytes = 128;

}  // namespace bitfleet::sharding

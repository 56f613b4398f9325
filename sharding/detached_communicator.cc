#include "sharding/detached_communicator.h"

#include "absl/strings/str_cat.h"

namespace bitfleet::sharding {

Status DetachedRankCommunicator::Refuse(const char* what) const {
  return absl::FailedPreconditionError(
      absl::StrCat(what, " on detached rank ", rank_, " of ", size_, ": this communicator has no peers"));
}

}  // namespace bitfleet::sharding

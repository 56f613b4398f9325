// NcclCommunicator option checks that run before any GPU or NCCL call (so CI checks them).
#include <chrono>

#include "gtest/gtest.h"
#include "sharding/nccl_communicator.h"

namespace bitfleet::sharding {
namespace {

TEST(NcclOptionsTest, BadOptionsAreInvalidArgument) {
  NcclOptions o;
  o.unique_id = std::string(kNcclUniqueIdBytes, '\0');
  o.rank = 2;
  o.size = 2;
  EXPECT_EQ(NcclCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.rank = -1;
  EXPECT_EQ(NcclCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.rank = 0;
  o.size = 0;
  EXPECT_EQ(NcclCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.size = 1;
  o.unique_id = "short";
  EXPECT_EQ(NcclCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.unique_id = std::string(kNcclUniqueIdBytes, '\0');
  o.timeout = std::chrono::milliseconds(0);
  EXPECT_EQ(NcclCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.timeout = std::chrono::seconds(1);
  o.device = -2;
  EXPECT_EQ(NcclCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::sharding

// The prefix registry: a bijection between block hashes and block ids.
#include "cache/prefix_registry.h"

#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::cache {
namespace {

BlockHash H(uint8_t seed) {
  BlockHash h{};
  h[0] = seed;
  h[31] = static_cast<uint8_t>(seed * 7);
  return h;
}

TEST(PrefixRegistryTest, InsertFindEraseKeepBothDirections) {
  PrefixRegistry registry(8);
  EXPECT_FALSE(registry.Find(H(1)).has_value());
  EXPECT_TRUE(*registry.Insert(H(1), 3));
  EXPECT_EQ(registry.Find(H(1)), 3);
  EXPECT_TRUE(registry.HoldsBlock(3));
  EXPECT_FALSE(*registry.Insert(H(1), 4)) << "the hash already names block 3";
  EXPECT_FALSE(*registry.Insert(H(2), 3)) << "block 3 already holds a hash";
  EXPECT_FALSE(registry.HoldsBlock(4));
  EXPECT_EQ(registry.Insert(H(2), 8).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Insert(H(2), -1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry.EraseBlock(3));
  EXPECT_FALSE(registry.EraseBlock(3));
  EXPECT_FALSE(registry.Find(H(1)).has_value());
  EXPECT_TRUE(*registry.Insert(H(1), 4));
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_TRUE(registry.CheckConsistency().ok());
  registry.Clear();
  EXPECT_EQ(registry.size(), 0u);
  EXPECT_FALSE(registry.HoldsBlock(4));
}

TEST(PrefixRegistryTest, CountPrefixStopsAtTheFirstMiss) {
  PrefixRegistry registry(8);
  ASSERT_TRUE(registry.Insert(H(1), 0).ok());
  ASSERT_TRUE(registry.Insert(H(2), 1).ok());
  ASSERT_TRUE(registry.Insert(H(4), 2).ok());
  const std::vector<BlockHash> chain = {H(1), H(2), H(3), H(4)};
  EXPECT_EQ(registry.CountPrefix(chain), 2);
  EXPECT_EQ(registry.CountPrefix(std::span<const BlockHash>(chain).subspan(2)), 0);
  EXPECT_EQ(registry.CountPrefix({}), 0);
}

}  // namespace
}  // namespace bitfleet::cache

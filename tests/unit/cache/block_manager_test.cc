// The per-replica block manager: prefix attach (shared, ref counted), growth with LRU eviction
// of cached blocks, registration, and the invariants after every operation.
#include "cache/block_manager.h"

#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::cache {
namespace {

std::vector<BlockHash> Chain(int n, int seed) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < n * 4; ++i) tokens.push_back(seed * 1000 + i);
  std::vector<BlockHash> chain;
  EXPECT_TRUE(ExtendBlockHashes({"salt", "model"}, tokens, 4, &chain).ok());
  return chain;
}

void ExpectCounts(const BlockManager& m, int used, int cached, int free) {
  const BlockCounts c = m.Counts();
  EXPECT_EQ(c.used, used);
  EXPECT_EQ(c.cached, cached);
  EXPECT_EQ(c.free, free);
  EXPECT_EQ(c.total, used + cached + free);
  EXPECT_TRUE(m.CheckInvariants().ok()) << m.CheckInvariants();
}

TEST(BlockManagerTest, RegisteredBlocksAreSharedAfterTheirOwnerFinishes) {
  BlockManager m(8, 4);
  const std::vector<BlockHash> chain = Chain(3, 1);
  ASSERT_EQ(*m.AttachCachedPrefix(1, chain, 3), 0);  // nothing cached yet
  ASSERT_TRUE(m.Grow(1, 14).ok());                    // 4 blocks
  ExpectCounts(m, 4, 0, 4);
  ASSERT_TRUE(m.RegisterFullBlocks(1, chain).ok());
  ASSERT_TRUE(m.Free(1).ok());
  ExpectCounts(m, 0, 3, 5);
  EXPECT_EQ(m.CachedPrefixBlocks(chain), 3);

  const CachedPrefix plan = m.PlanCachedPrefix(chain, 2);
  EXPECT_EQ(plan.blocks, 2);
  EXPECT_EQ(plan.revived, 2);
  ASSERT_EQ(*m.AttachCachedPrefix(2, chain, 2), 2);
  ASSERT_EQ(*m.AttachCachedPrefix(3, chain, 3), 3);
  ExpectCounts(m, 3, 0, 5);
  EXPECT_EQ(m.Table(2)[0], m.Table(3)[0]);
  EXPECT_EQ(m.Table(2)[1], m.Table(3)[1]);
  ASSERT_TRUE(m.Free(2).ok());
  ExpectCounts(m, 3, 0, 5);  // still referenced by sequence 3
  ASSERT_TRUE(m.Free(3).ok());
  ExpectCounts(m, 0, 3, 5);
  EXPECT_EQ(m.AttachCachedPrefix(3, chain, 3).status().code(), absl::StatusCode::kOk);
  EXPECT_EQ(m.AttachCachedPrefix(3, chain, 3).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Cached blocks go least recently released first, and within one sequence its chain's tail
// first: a lookup walks from the first block, so the rest of the chain stays reachable.
TEST(BlockManagerTest, GrowEvictsTheLeastRecentlyReleasedCachedBlockFirst) {
  BlockManager m(4, 4);
  const std::vector<BlockHash> a = Chain(2, 1);
  const std::vector<BlockHash> b = Chain(2, 2);
  ASSERT_TRUE(m.Grow(1, 8).ok());
  ASSERT_TRUE(m.RegisterFullBlocks(1, a).ok());
  ASSERT_TRUE(m.Grow(2, 8).ok());
  ASSERT_TRUE(m.RegisterFullBlocks(2, b).ok());
  ASSERT_TRUE(m.Free(1).ok());  // a's blocks released first: they go first
  ASSERT_TRUE(m.Free(2).ok());
  ExpectCounts(m, 0, 4, 0);
  ASSERT_TRUE(m.Grow(3, 4).ok());
  EXPECT_EQ(m.evictions(), 1);
  EXPECT_EQ(m.CachedPrefixBlocks(a), 1) << "a's second block was evicted, its first kept";
  EXPECT_EQ(m.CachedPrefixBlocks(b), 2);
  ExpectCounts(m, 1, 3, 0);
  ASSERT_TRUE(m.Grow(4, 4).ok());
  EXPECT_EQ(m.evictions(), 2);
  EXPECT_EQ(m.CachedPrefixBlocks(a), 0);
  EXPECT_EQ(m.CachedPrefixBlocks(b), 2);
  ASSERT_TRUE(m.Free(4).ok());  // back to the free list: nothing cached in it
  ExpectCounts(m, 1, 2, 1);
  EXPECT_EQ(m.Grow(3, 100).code(), absl::StatusCode::kResourceExhausted);
  ExpectCounts(m, 1, 2, 1);  // all or nothing
  EXPECT_EQ(m.BlocksNeeded(3, 16), 3);
}

// A freed sequence's unregistered blocks (a partial last block here) are reused before any cached
// block is evicted, even cached blocks released before them.
TEST(BlockManagerTest, BlocksWithoutCachedContentAreReusedFirst) {
  BlockManager m(4, 4);
  const std::vector<BlockHash> a = Chain(2, 5);
  const std::vector<BlockHash> b = Chain(1, 6);
  ASSERT_TRUE(m.Grow(1, 8).ok());
  ASSERT_TRUE(m.RegisterFullBlocks(1, a).ok());
  ASSERT_TRUE(m.Grow(2, 6).ok());  // one full block and a partial one
  ASSERT_TRUE(m.RegisterFullBlocks(2, b).ok());
  ASSERT_TRUE(m.Free(1).ok());
  ASSERT_TRUE(m.Free(2).ok());
  ExpectCounts(m, 0, 3, 1);
  ASSERT_TRUE(m.Grow(3, 4).ok());
  EXPECT_EQ(m.evictions(), 0);
  EXPECT_EQ(m.CachedPrefixBlocks(a), 2);
  EXPECT_EQ(m.CachedPrefixBlocks(b), 1);
  ExpectCounts(m, 1, 3, 0);
}

TEST(BlockManagerTest, DuplicateContentStaysPrivate) {
  BlockManager m(8, 4);
  const std::vector<BlockHash> chain = Chain(2, 3);
  ASSERT_TRUE(m.Grow(1, 8).ok());
  ASSERT_TRUE(m.Grow(2, 8).ok());
  ASSERT_TRUE(m.RegisterFullBlocks(1, chain).ok());
  ASSERT_TRUE(m.RegisterFullBlocks(2, chain).ok());  // same content computed twice
  ASSERT_TRUE(m.Free(1).ok());
  ASSERT_TRUE(m.Free(2).ok());
  ExpectCounts(m, 0, 2, 6);
  EXPECT_EQ(m.RegisterFullBlocks(9, chain).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(m.Grow(4, 4).ok());
  EXPECT_EQ(m.RegisterFullBlocks(4, chain).code(), absl::StatusCode::kInvalidArgument);  // table too short
}

TEST(BlockManagerTest, ResetForgetsEverything) {
  BlockManager m(6, 4);
  const std::vector<BlockHash> chain = Chain(1, 4);
  ASSERT_TRUE(m.Grow(1, 4).ok());
  ASSERT_TRUE(m.RegisterFullBlocks(1, chain).ok());
  ASSERT_TRUE(m.Grow(2, 9).ok());
  m.Reset();
  ExpectCounts(m, 0, 0, 6);
  EXPECT_FALSE(m.HasSequence(1));
  EXPECT_EQ(m.CachedPrefixBlocks(chain), 0);
}

}  // namespace
}  // namespace bitfleet::cache

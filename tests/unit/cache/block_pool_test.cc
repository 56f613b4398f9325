#include "cache/block_pool.h"

#include <algorithm>
#include <vector>

#include "cache/block_table.h"
#include "gtest/gtest.h"

namespace bitfleet::cache {
namespace {

TEST(BlockPoolTest, AllocatesEveryBlockOnceThenExhausts) {
  BlockPool pool(4);
  EXPECT_EQ(pool.num_blocks(), 4);
  EXPECT_EQ(pool.num_free(), 4);
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    auto block = pool.Allocate();
    ASSERT_TRUE(block.ok());
    EXPECT_EQ(pool.ref_count(*block), 1);
    got.push_back(*block);
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_EQ(pool.Allocate().status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(BlockPoolTest, FreeListIsLeastRecentlyReleasedFirst) {
  BlockPool pool(3);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.AllocateMany(3, &blocks).ok());
  EXPECT_EQ(blocks, (std::vector<int32_t>{0, 1, 2}));
  ASSERT_TRUE(pool.Release(2).ok());
  ASSERT_TRUE(pool.Release(0).ok());
  ASSERT_TRUE(pool.Release(1).ok());
  EXPECT_EQ(*pool.Allocate(), 2);
  EXPECT_EQ(*pool.Allocate(), 0);
  EXPECT_EQ(*pool.Allocate(), 1);
}

// A block released with nothing worth keeping goes to the head: reused before the others.
TEST(BlockPoolTest, BlocksNotKeptAreReusedFirst) {
  BlockPool pool(3);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.AllocateMany(3, &blocks).ok());
  ASSERT_TRUE(pool.Release(0).ok());
  ASSERT_TRUE(pool.Release(1).ok());
  ASSERT_TRUE(pool.Release(2, /*keep=*/false).ok());
  EXPECT_EQ(*pool.Allocate(), 2);
  EXPECT_EQ(*pool.Allocate(), 0);
  ASSERT_TRUE(pool.Release(2, /*keep=*/false).ok());
  ASSERT_TRUE(pool.Release(0, /*keep=*/false).ok());
  EXPECT_EQ(*pool.Allocate(), 0);  // the most recent head release comes first
  EXPECT_EQ(*pool.Allocate(), 2);
  EXPECT_EQ(*pool.Allocate(), 1);
  EXPECT_EQ(pool.num_free(), 0);
}

TEST(BlockPoolTest, SharedBlocksReturnWhenLastReferenceDrops) {
  BlockPool pool(2);
  const int32_t block = *pool.Allocate();
  ASSERT_TRUE(pool.Acquire(block).ok());
  EXPECT_EQ(pool.ref_count(block), 2);
  ASSERT_TRUE(pool.Release(block).ok());
  EXPECT_FALSE(pool.is_free(block));
  EXPECT_EQ(pool.num_free(), 1);
  ASSERT_TRUE(pool.Release(block).ok());
  EXPECT_TRUE(pool.is_free(block));
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(BlockPoolTest, AcquireRevivesAFreeBlockFromTheMiddleOfTheList) {
  BlockPool pool(3);
  ASSERT_TRUE(pool.Acquire(1).ok());  // a cached prefix block taken back
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_EQ(pool.ref_count(1), 1);
  EXPECT_EQ(*pool.Allocate(), 0);
  EXPECT_EQ(*pool.Allocate(), 2);
  EXPECT_FALSE(pool.Allocate().ok());
}

TEST(BlockPoolTest, RejectsDoubleFreeAndUnknownIds) {
  BlockPool pool(2);
  const int32_t block = *pool.Allocate();
  ASSERT_TRUE(pool.Release(block).ok());
  EXPECT_EQ(pool.Release(block).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.Release(-1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.Release(2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.Acquire(7).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(BlockPoolTest, AllocateManyIsAllOrNothing) {
  BlockPool pool(3);
  std::vector<int32_t> blocks;
  EXPECT_EQ(pool.AllocateMany(4, &blocks).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(blocks.empty());
  EXPECT_EQ(pool.num_free(), 3);
}

TEST(BlockTableTest, ReserveGrowsByWholeBlocksAndReleaseReturnsThem) {
  EXPECT_EQ(BlocksForTokens(0, 16), 0);
  EXPECT_EQ(BlocksForTokens(1, 16), 1);
  EXPECT_EQ(BlocksForTokens(16, 16), 1);
  EXPECT_EQ(BlocksForTokens(17, 16), 2);
  BlockPool pool(4);
  BlockTable table(16);
  ASSERT_TRUE(table.Reserve(pool, 17).ok());
  EXPECT_EQ(table.ids().size(), 2u);
  EXPECT_EQ(table.capacity_tokens(), 32);
  ASSERT_TRUE(table.Reserve(pool, 30).ok());  // already covered
  EXPECT_EQ(table.ids().size(), 2u);
  EXPECT_EQ(table.Reserve(pool, 65).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(table.ids().size(), 2u);  // unchanged on failure
  EXPECT_EQ(pool.num_free(), 2);
  ASSERT_TRUE(table.Release(pool).ok());
  EXPECT_TRUE(table.ids().empty());
  EXPECT_EQ(pool.num_free(), 4);
}

}  // namespace
}  // namespace bitfleet::cache

// Chained block hashes: a known answer computed independently (Python hashlib over the byte
// layout in docs/scheduler.md), and every field changing the hash.
#include "cache/block_hash.h"

#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::cache {
namespace {

const BlockHashScope kScope{"tenant-a", "model-x"};

TEST(BlockHashTest, MatchesTheDocumentedByteLayout) {
  // sha256(u64le(20) "bitfleet.kv-block.v1" u64le(8) "tenant-a" u64le(7) "model-x" u64le(0)
  //        u64le(16) i32le(1) i32le(2) i32le(3) i32le(4))
  const std::vector<int32_t> first = {1, 2, 3, 4};
  auto h1 = HashBlock(kScope, nullptr, first);
  ASSERT_TRUE(h1.ok()) << h1.status();
  EXPECT_EQ(BlockHashHex(*h1), "6ffd120f81888dfa6685b782d4aa707e3310268159848b4e3ad25eaa5c8c4fdc");
  const std::vector<int32_t> second = {5, 6, 7, -8};
  auto h2 = HashBlock(kScope, &*h1, second);
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(BlockHashHex(*h2), "3f5562e248ccb7c8f7cc815073eb2989bf602fe74d662719b6480adfae4a0de9");
}

TEST(BlockHashTest, EveryFieldChangesTheHash) {
  const std::vector<int32_t> tokens = {10, 20, 30, 40};
  const BlockHash base = *HashBlock(kScope, nullptr, tokens);
  EXPECT_NE(*HashBlock({"tenant-b", "model-x"}, nullptr, tokens), base);
  EXPECT_NE(*HashBlock({"tenant-a", "model-y"}, nullptr, tokens), base);
  EXPECT_NE(*HashBlock(kScope, &base, tokens), base);
  EXPECT_NE(*HashBlock(kScope, nullptr, std::vector<int32_t>{10, 20, 30, 41}), base);
  // Length prefixes keep field boundaries apart: moving bytes between salt and model id matters.
  EXPECT_NE(*HashBlock({"ab", "c"}, nullptr, tokens), *HashBlock({"a", "bc"}, nullptr, tokens));
  EXPECT_EQ(*HashBlock(kScope, nullptr, tokens), base);
}

TEST(BlockHashTest, ExtendCoversFullBlocksOnlyAndIsIncremental) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < 11; ++i) tokens.push_back(100 + i);
  std::vector<BlockHash> all;
  ASSERT_TRUE(ExtendBlockHashes(kScope, tokens, 4, &all).ok());
  ASSERT_EQ(all.size(), 2u);  // 11 tokens: two full blocks of 4
  EXPECT_EQ(all[0], *HashBlock(kScope, nullptr, std::span<const int32_t>(tokens).first(4)));
  EXPECT_EQ(all[1], *HashBlock(kScope, &all[0], std::span<const int32_t>(tokens).subspan(4, 4)));

  std::vector<BlockHash> grown;
  ASSERT_TRUE(ExtendBlockHashes(kScope, std::span<const int32_t>(tokens).first(5), 4, &grown).ok());
  ASSERT_EQ(grown.size(), 1u);
  tokens.push_back(111);  // 12 tokens: a third block
  ASSERT_TRUE(ExtendBlockHashes(kScope, tokens, 4, &grown).ok());
  ASSERT_EQ(grown.size(), 3u);
  EXPECT_EQ(grown[0], all[0]);
  EXPECT_EQ(grown[1], all[1]);

  std::vector<BlockHash> too_long(5);
  EXPECT_EQ(ExtendBlockHashes(kScope, tokens, 4, &too_long).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExtendBlockHashes(kScope, tokens, 0, &grown).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::cache

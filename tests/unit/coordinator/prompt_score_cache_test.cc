// PromptScoreCache on its own: what it keeps, what it serves, what it evicts.
#include "coordinator/prompt_score_cache.h"

#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::coordinator {
namespace {

cache::BlockHash Hash(uint8_t tag) {
  cache::BlockHash hash{};
  hash[0] = tag;
  hash[31] = static_cast<uint8_t>(255 - tag);
  return hash;
}

// `n` scored tokens with `top` alternatives; values tagged by `tag` so entries tell apart.
std::vector<ScoredToken> Scores(int n, int top, float tag) {
  std::vector<ScoredToken> scores(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    scores[i].logprob = -tag - 0.01f * static_cast<float>(i);
    for (int k = 0; k < top; ++k) scores[i].top_logprobs.push_back({100 * i + k, -0.5f * static_cast<float>(k)});
  }
  return scores;
}

TEST(PromptScoreCacheTest, KeepsBlocksAndCutsTheirAlternativesToTheRequest) {
  PromptScoreCache cache(1 << 20);
  EXPECT_FALSE(cache.Find(Hash(1), 0).has_value());
  cache.Insert(Hash(1), 3, Scores(16, 3, 1.0f));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_GT(cache.bytes(), 0);

  std::optional<std::vector<ScoredToken>> two = cache.Find(Hash(1), 2);
  ASSERT_TRUE(two.has_value());
  ASSERT_EQ(two->size(), 16u);
  const std::vector<ScoredToken> kept = Scores(16, 3, 1.0f);
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ((*two)[i].logprob, kept[i].logprob);
    ASSERT_EQ((*two)[i].top_logprobs.size(), 2u);
    for (size_t k = 0; k < 2; ++k) {
      EXPECT_EQ((*two)[i].top_logprobs[k].token, kept[i].top_logprobs[k].token);
      EXPECT_EQ((*two)[i].top_logprobs[k].logprob, kept[i].top_logprobs[k].logprob);
    }
  }
  ASSERT_TRUE(cache.Find(Hash(1), 3).has_value());
  EXPECT_EQ(cache.Find(Hash(1), 3)->front().top_logprobs.size(), 3u);
  // More alternatives than were computed: not served.
  EXPECT_FALSE(cache.Find(Hash(1), 4).has_value());
  EXPECT_FALSE(cache.Find(Hash(2), 0).has_value());
}

TEST(PromptScoreCacheTest, MoreAlternativesReplaceAnEntryAndFewerLeaveIt) {
  PromptScoreCache cache(1 << 20);
  cache.Insert(Hash(1), 1, Scores(4, 1, 1.0f));
  cache.Insert(Hash(1), 5, Scores(4, 5, 2.0f));
  EXPECT_EQ(cache.size(), 1u);
  ASSERT_TRUE(cache.Find(Hash(1), 5).has_value());
  EXPECT_EQ(cache.Find(Hash(1), 0)->front().logprob, -2.0f);
  const int64_t bytes = cache.bytes();
  cache.Insert(Hash(1), 2, Scores(4, 2, 3.0f));
  EXPECT_EQ(cache.Find(Hash(1), 0)->front().logprob, -2.0f);
  EXPECT_EQ(cache.bytes(), bytes);
}

TEST(PromptScoreCacheTest, TheLeastRecentlyUsedGoWhenTheBudgetIsReached) {
  // Room for three entries of this size, not four.
  PromptScoreCache probe(1 << 20);
  probe.Insert(Hash(0), 2, Scores(16, 2, 0.0f));
  const int64_t entry = probe.bytes();
  PromptScoreCache cache(3 * entry + entry / 2);
  for (uint8_t i = 1; i <= 3; ++i) cache.Insert(Hash(i), 2, Scores(16, 2, i));
  EXPECT_EQ(cache.size(), 3u);
  ASSERT_TRUE(cache.Find(Hash(1), 0).has_value());  // 1 is now the most recent: 2 is the oldest
  cache.Insert(Hash(4), 2, Scores(16, 2, 4.0f));
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_FALSE(cache.Find(Hash(2), 0).has_value());
  for (uint8_t i : {1, 3, 4}) EXPECT_TRUE(cache.Find(Hash(i), 0).has_value()) << int{i};
  EXPECT_LE(cache.bytes(), cache.max_bytes());
  EXPECT_EQ(cache.bytes(), 3 * entry);
}

TEST(PromptScoreCacheTest, AnEntryOverTheWholeBudgetIsNotKept) {
  PromptScoreCache cache(256);
  cache.Insert(Hash(1), 20, Scores(16, 20, 1.0f));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0);
  PromptScoreCache off(0);
  off.Insert(Hash(1), 0, Scores(1, 0, 1.0f));
  EXPECT_FALSE(off.Find(Hash(1), 0).has_value());
}

}  // namespace
}  // namespace bitfleet::coordinator

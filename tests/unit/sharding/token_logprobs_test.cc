// Log probabilities of sampled tokens (worker/token_logprobs.h) against a long-double
// log-softmax of the whole row: the sampled token's value, the most likely tokens in order (ties
// to the lower id), rows split into uneven slices merged back, and the collective over 1-4
// thread ranks giving every rank the whole row's answer.
#include "worker/token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sharding/fake_communicator.h"
#include "sharding/shard_plan.h"
#include "worker/rng.h"

namespace bitfleet::worker {
namespace {

std::vector<float> RandomLogits(uint64_t seed, int n) {
  Rng rng(seed);
  std::vector<float> logits(n);
  for (float& v : logits) v = static_cast<float>(rng.Uniform() * 16.0 - 8.0);
  for (int i = 0; i < std::min(n, 4); ++i) logits[rng.Next() % n] += 12.0f;
  return logits;
}

struct Reference {
  double logprob;
  std::vector<std::pair<int32_t, double>> top;
};

Reference ReferenceLogprobs(const std::vector<float>& logits, int32_t token, int top_n) {
  long double max = -std::numeric_limits<long double>::infinity();
  for (float l : logits) max = std::max<long double>(max, l);
  long double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<long double>(l) - max);
  const long double log_z = max + std::log(sum);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  Reference ref{static_cast<double>(logits[token] - log_z), {}};
  for (int k = 0; k < top_n && k < static_cast<int>(order.size()); ++k) {
    ref.top.push_back({order[k], static_cast<double>(logits[order[k]] - log_z)});
  }
  return ref;
}

void ExpectMatches(const TokenLogprobs& got, const Reference& want, double tolerance) {
  EXPECT_NEAR(got.logprob, want.logprob, tolerance);
  ASSERT_EQ(got.top.size(), want.top.size());
  for (size_t k = 0; k < want.top.size(); ++k) {
    EXPECT_EQ(got.top[k].token, want.top[k].first) << "rank " << k;
    EXPECT_NEAR(got.top[k].logprob, want.top[k].second, tolerance) << "rank " << k;
  }
}

TEST(TokenLogprobsTest, WholeRowsEqualTheLogSoftmax) {
  for (int n : {1, 2, 7, 1000, 49152}) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      const std::vector<float> logits = RandomLogits(seed * 100 + n, n);
      const int32_t token = static_cast<int32_t>((seed * 7919) % n);
      const int top_n = static_cast<int>(seed * 5 % (kMaxTopLogprobs + 1));
      SCOPED_TRACE(testing::Message() << "n " << n << " seed " << seed << " top " << top_n);
      ExpectMatches(ComputeLogprobs(logits, token, top_n), ReferenceLogprobs(logits, token, top_n), 3e-6);
    }
  }
}

TEST(TokenLogprobsTest, ProbabilitiesSumToOneAndTiesGoToTheLowerId) {
  std::vector<float> logits(50, 1.0f);
  logits[30] = 3.0f;
  logits[40] = 3.0f;
  const TokenLogprobs got = ComputeLogprobs(logits, 30, 4);
  ASSERT_EQ(got.top.size(), 4u);
  EXPECT_EQ(got.top[0].token, 30);
  EXPECT_EQ(got.top[1].token, 40);
  EXPECT_EQ(got.top[2].token, 0);
  EXPECT_EQ(got.top[3].token, 1);
  EXPECT_EQ(got.top[0].logprob, got.top[1].logprob);
  EXPECT_EQ(got.logprob, got.top[0].logprob);
  double mass = 0;
  for (int32_t t = 0; t < 50; ++t) mass += std::exp(ComputeLogprobs(logits, t, 0).logprob);
  EXPECT_NEAR(mass, 1.0, 3e-6);
  // A one-token vocabulary is certain.
  EXPECT_EQ(ComputeLogprobs(std::vector<float>{-3.0f}, 0, 1).logprob, 0.0f);
}

TEST(TokenLogprobsTest, ANanLogitPoisonsTheRow) {
  std::vector<float> logits = RandomLogits(9, 100);
  logits[17] = std::numeric_limits<float>::quiet_NaN();
  const TokenLogprobs got = ComputeLogprobs(logits, 3, 2);
  EXPECT_TRUE(std::isnan(got.logprob));
  for (const TopLogprob& t : got.top) EXPECT_NE(t.token, 17);
  const std::vector<float> all_nan(8, std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(ComputeLogprobs(all_nan, 0, 2).logprob));
  EXPECT_TRUE(ComputeLogprobs(all_nan, 0, 2).top.empty());
}

// Slices of uneven widths, merged in order, give the whole row's answer.
TEST(TokenLogprobsTest, SplitRowsMergeToTheWholeRow) {
  const int n = 1000;
  for (int parts : {2, 3, 4, 7}) {
    const std::vector<float> logits = RandomLogits(parts, n);
    for (int32_t token : {0, 499, 999}) {
      std::vector<LogprobSlice> slices;
      for (int p = 0; p < parts; ++p) {
        const sharding::Range r = sharding::BalancedRange(n, 1, parts, p);
        slices.push_back(SummarizeSlice(std::span<const float>(logits).subspan(r.begin, r.size()),
                                        static_cast<int32_t>(r.begin), token, 6));
      }
      SCOPED_TRACE(testing::Message() << parts << " parts, token " << token);
      ExpectMatches(MergeSlices(slices, 6), ReferenceLogprobs(logits, token, 6), 3e-6);
    }
  }
}

// Rows summarized on a pool give exactly what one thread gives, whole or split.
TEST(TokenLogprobsTest, APoolGivesTheSameAnswers) {
  const int n = 5000;
  std::vector<std::vector<float>> logits;
  std::vector<ShardedLogprobRow> rows;
  for (int i = 0; i < 13; ++i) logits.push_back(RandomLogits(70 + i, n));
  for (int i = 0; i < 13; ++i) rows.push_back({logits[i], static_cast<int32_t>(i * 37), i % 6});
  ThreadPool pool(3);
  std::vector<TokenLogprobs> alone, pooled, sharded;
  WholeRowLogprobs(rows, &alone);
  WholeRowLogprobs(rows, &pooled, &pool);
  sharding::FakeGroup one(1);
  ASSERT_TRUE(ShardedLogprobs(*one.rank(0), 0, rows, &sharded, &pool).ok());
  ASSERT_EQ(pooled.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(pooled[i].logprob, alone[i].logprob) << i;
    ASSERT_EQ(pooled[i].top.size(), alone[i].top.size());
    for (size_t k = 0; k < alone[i].top.size(); ++k) EXPECT_EQ(pooled[i].top[k].token, alone[i].top[k].token);
    EXPECT_NEAR(sharded[i].logprob, alone[i].logprob, 1e-6) << i;  // sum_exp travels as a float
  }
}

// The collective: every rank passes its slice of each row and gets the whole rows' answers.
TEST(TokenLogprobsTest, ShardedRowsGiveEveryRankTheWholeAnswer) {
  const int n = 1000;
  std::vector<std::vector<float>> rows;
  std::vector<int32_t> tokens = {5, 998, 421};
  std::vector<int> tops = {0, 20, 3};
  for (int i = 0; i < 3; ++i) rows.push_back(RandomLogits(40 + i, n));
  for (int tp = 1; tp <= 4; ++tp) {
    sharding::FakeGroup group(tp);
    std::vector<std::vector<TokenLogprobs>> answers(tp);
    std::vector<Status> statuses(tp);
    std::vector<std::thread> threads;
    for (int rank = 0; rank < tp; ++rank) {
      threads.emplace_back([&, rank] {
        const sharding::Range slice = sharding::BalancedRange(n, 1, tp, rank);
        std::vector<ShardedLogprobRow> mine;
        for (int i = 0; i < 3; ++i) {
          mine.push_back({std::span<const float>(rows[i]).subspan(slice.begin, slice.size()), tokens[i], tops[i]});
        }
        statuses[rank] =
            ShardedLogprobs(*group.rank(rank), static_cast<int32_t>(slice.begin), mine, &answers[rank]);
      });
    }
    for (std::thread& t : threads) t.join();
    for (int rank = 0; rank < tp; ++rank) {
      ASSERT_TRUE(statuses[rank].ok()) << statuses[rank];
      ASSERT_EQ(answers[rank].size(), 3u);
      for (int i = 0; i < 3; ++i) {
        SCOPED_TRACE(testing::Message() << "tp " << tp << " rank " << rank << " row " << i);
        ExpectMatches(answers[rank][i], ReferenceLogprobs(rows[i], tokens[i], tops[i]), 3e-6);
        EXPECT_EQ(answers[rank][i].logprob, answers[0][i].logprob) << "ranks disagree";
      }
    }
  }
  sharding::FakeGroup one(1);
  std::vector<TokenLogprobs> out;
  const ShardedLogprobRow bad{std::span<const float>(rows[0]), 1, kMaxTopLogprobs + 1};
  EXPECT_EQ(ShardedLogprobs(*one.rank(0), 0, std::span<const ShardedLogprobRow>(&bad, 1), &out).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::worker

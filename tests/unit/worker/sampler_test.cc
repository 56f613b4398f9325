#include "worker/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "worker/rng.h"

namespace bitfleet::worker {
namespace {

// Logits whose softmax is exactly `probs` (up to float rounding).
std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

SamplingParams Neutral(float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  return p;
}

TEST(RngTest, SequenceIsFixedForASeed) {
  // Reference values computed independently (SplitMix64 seeding, xoshiro256**), seed 42.
  Rng rng(42);
  EXPECT_EQ(rng.Next(), 0x15780b2e0c2ec716ull);
  EXPECT_EQ(rng.Next(), 0x6104d9866d113a7eull);
  EXPECT_EQ(rng.Next(), 0xae17533239e499a1ull);
  Rng other(43);
  EXPECT_NE(other.Next(), 0x15780b2e0c2ec716ull);
  for (int i = 0; i < 1000; ++i) {
    const double u = rng.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(SamplerTest, ValidationNamesTheBadField) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
  auto bad = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    return ValidateSamplingParams(p);
  };
  EXPECT_FALSE(bad([](SamplingParams& p) { p.temperature = -1; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.temperature = NAN; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.top_k = -2; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.top_p = 0; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.top_p = 1.5f; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.min_p = -0.1f; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.repeat_penalty = 0; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.presence_penalty = INFINITY; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.frequency_penalty = 3; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.penalty_last_n = -2; }).ok());
  const Status s = bad([](SamplingParams& p) { p.top_p = 2; });
  EXPECT_NE(std::string(s.message()).find("top_p"), std::string::npos);

  EXPECT_TRUE(bad([](SamplingParams& p) { p.logit_bias = {{0, -100.0f}, {7, 100.0f}}; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.logit_bias = {{3, 100.5f}}; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.logit_bias = {{3, NAN}}; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.logit_bias = {{5, 1.0f}, {5, 2.0f}}; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) { p.logit_bias = {{6, 1.0f}, {5, 2.0f}}; }).ok());
  EXPECT_FALSE(bad([](SamplingParams& p) {
                 for (size_t t = 0; t <= kMaxLogitBiasEntries; ++t) {
                   p.logit_bias.push_back({static_cast<int32_t>(t), 1});
                 }
               }).ok());
  SamplingParams in_vocab;
  in_vocab.logit_bias = {{9, 1.0f}};
  EXPECT_TRUE(ValidateSamplingParams(in_vocab, 10).ok());
  EXPECT_FALSE(ValidateSamplingParams(in_vocab, 9).ok());
}

// allowed_tokens (constrained decoding): the other tokens are never drawn, in any mode; the
// distribution renormalizes over the allowed ones.
TEST(SamplerTest, AllowedTokensMaskTheRest) {
  Sampler sampler(70);  // two mask words
  std::vector<float> logits(70, 0.0f);
  for (int t = 0; t < 70; ++t) logits[t] = static_cast<float>(t % 7);
  logits[66] = 5.5f;  // the best allowed one; tokens 6, 13, ... (6.0) are better but masked
  const std::vector<uint64_t> allowed = {uint64_t{1} << 3 | uint64_t{1} << 8, uint64_t{1} << (66 - 64)};
  SamplingParams p = Neutral(0.0f);
  p.allowed_tokens = allowed;
  Rng rng(3);
  EXPECT_EQ(sampler.Sample(logits, {}, p, rng), 66);
  p.temperature = 1.0f;
  for (int i = 0; i < 200; ++i) {
    const int32_t t = sampler.Sample(logits, {}, p, rng);
    EXPECT_TRUE(t == 3 || t == 8 || t == 66) << t;
  }
  const auto dist = sampler.Distribution(logits, {}, p);
  double mass = 0;
  for (const auto& [token, prob] : dist) {
    if (token == 3 || token == 8 || token == 66) {
      mass += prob;
    } else {
      EXPECT_EQ(prob, 0.0f) << token;
    }
  }
  EXPECT_NEAR(mass, 1.0, 1e-6);
  // A boost cannot reach a masked token.
  p.logit_bias = {{5, 100.0f}};
  EXPECT_NE(sampler.Sample(logits, {}, p, rng), 5);

  EXPECT_TRUE(ValidateSamplingParams(p, 70).ok());
  EXPECT_FALSE(ValidateSamplingParams(p, 200).ok()) << "two words do not cover 200 tokens";
  const std::vector<uint64_t> none = {0, uint64_t{1} << 10};  // bit 74: outside a vocabulary of 70
  p.allowed_tokens = none;
  EXPECT_FALSE(ValidateSamplingParams(p, 70).ok());
}

// logit_bias adds to the logits before everything else: Sample and Distribution with a bias are
// exactly those of the biased row without one, in every mode and with penalties.
TEST(SamplerTest, LogitBiasIsAddedToTheLogitsFirst) {
  Sampler sampler(6);
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 2.0f, 1.0f, 2.9f};
  SamplingParams biased = Neutral(0.0f);
  biased.logit_bias = {{1, -100.0f}, {2, 2.5f}, {4, 0.25f}};
  std::vector<float> by_hand = logits;
  by_hand[1] -= 100.0f;
  by_hand[2] += 2.5f;
  by_hand[4] += 0.25f;
  SamplingParams plain = biased;
  plain.logit_bias.clear();
  Rng rng(0);
  EXPECT_EQ(sampler.Sample(logits, {}, plain, rng), 1);
  EXPECT_EQ(sampler.Sample(logits, {}, biased, rng), 5) << "the banned best token gives way to the next";
  for (float temperature : {0.7f, 1.0f}) {
    for (int top_k : {0, 3}) {
      biased.temperature = plain.temperature = temperature;
      biased.top_k = plain.top_k = top_k;
      biased.repeat_penalty = plain.repeat_penalty = 1.5f;
      const std::vector<int32_t> history = {2, 3};
      EXPECT_EQ(sampler.Distribution(logits, history, biased), sampler.Distribution(by_hand, history, plain));
      Rng a(11), b(11);
      for (int i = 0; i < 20; ++i) {
        EXPECT_EQ(sampler.Sample(logits, history, biased, a), sampler.Sample(by_hand, history, plain, b));
      }
    }
  }
}

TEST(SamplerTest, GreedyTakesTheHighestLogitAndTheLowestIdOnTies) {
  Sampler sampler(5);
  Rng rng(1);
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_EQ(sampler.Sample(logits, {}, Neutral(0.0f), rng), 1);
  const auto dist = sampler.Distribution(logits, {}, Neutral(0.0f));
  ASSERT_EQ(dist.size(), 1u);
  EXPECT_EQ(dist[0].first, 1);
}

TEST(SamplerTest, TemperatureScalesTheSoftmax) {
  Sampler sampler(4);
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f};
  for (float temp : {0.5f, 1.0f, 2.0f}) {
    const auto dist = sampler.Distribution(logits, {}, Neutral(temp));
    ASSERT_EQ(dist.size(), 4u);
    double z = 0;
    for (float l : logits) z += std::exp(l / temp);
    for (const auto& [token, p] : dist) EXPECT_NEAR(p, std::exp(logits[token] / temp) / z, 1e-6) << temp;
  }
}

TEST(SamplerTest, TopKKeepsTheKBestRenormalized) {
  Sampler sampler(5);
  const std::vector<float> logits = LogitsOf({0.1, 0.4, 0.2, 0.25, 0.05});
  SamplingParams p = Neutral();
  p.top_k = 2;
  const auto dist = sampler.Distribution(logits, {}, p);
  ASSERT_EQ(dist.size(), 2u);
  EXPECT_EQ(dist[0].first, 1);
  EXPECT_EQ(dist[1].first, 3);
  EXPECT_NEAR(dist[0].second, 0.4 / 0.65, 1e-6);
  // top_k = 1 is greedy whatever the seed.
  p.top_k = 1;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng rng(seed);
    EXPECT_EQ(sampler.Sample(logits, {}, p, rng), 1);
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingTheMass) {
  Sampler sampler(4);
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  SamplingParams p = Neutral();
  p.top_p = 0.75f;
  EXPECT_EQ(sampler.Distribution(logits, {}, p).size(), 2u);
  p.top_p = 0.85f;
  const auto dist = sampler.Distribution(logits, {}, p);
  ASSERT_EQ(dist.size(), 3u);
  EXPECT_NEAR(dist[2].second, 0.15 / 0.95, 1e-6);
  p.top_p = 0.1f;
  EXPECT_EQ(sampler.Distribution(logits, {}, p).size(), 1u);  // at least one token
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheTop) {
  Sampler sampler(4);
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  SamplingParams p = Neutral();
  p.min_p = 0.5f;  // threshold 0.25
  auto dist = sampler.Distribution(logits, {}, p);
  ASSERT_EQ(dist.size(), 2u);
  EXPECT_NEAR(dist[0].second, 0.5 / 0.8, 1e-6);
  p.min_p = 0.09f;  // threshold 0.045: all four
  EXPECT_EQ(sampler.Distribution(logits, {}, p).size(), 4u);
}

TEST(SamplerTest, FiltersUseUntemperedProbabilitiesThenTemperatureApplies) {
  Sampler sampler(4);
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  SamplingParams p = Neutral(2.0f);
  p.top_k = 2;
  const auto dist = sampler.Distribution(logits, {}, p);
  ASSERT_EQ(dist.size(), 2u);
  const double a = std::sqrt(0.5), b = std::sqrt(0.3);
  EXPECT_NEAR(dist[0].second, a / (a + b), 1e-6);
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  Sampler sampler(4);
  const std::vector<float> logits = {2.0f, -1.0f, 1.0f, 0.0f};
  SamplingParams p = Neutral(0.0f);
  p.repeat_penalty = 4.0f;
  const std::vector<int32_t> history = {0, 0, 1};
  // 2.0 -> 0.5 so token 2 (1.0) now wins under greedy.
  Rng rng(0);
  EXPECT_EQ(sampler.Sample(logits, history, p, rng), 2);
  // Penalized logits are observable through the distribution at temperature 1.
  p.temperature = 1.0f;
  auto dist = sampler.Distribution(logits, history, p);
  std::map<int32_t, float> prob(dist.begin(), dist.end());
  const double z = std::exp(0.5) + std::exp(-4.0) + std::exp(1.0) + std::exp(0.0);
  EXPECT_NEAR(prob[0], std::exp(0.5) / z, 1e-6);
  EXPECT_NEAR(prob[1], std::exp(-4.0) / z, 1e-6);
  // A window of 1 sees only the last token (1).
  p.penalty_last_n = 1;
  dist = sampler.Distribution(logits, history, p);
  prob = std::map<int32_t, float>(dist.begin(), dist.end());
  const double z1 = std::exp(2.0) + std::exp(-4.0) + std::exp(1.0) + std::exp(0.0);
  EXPECT_NEAR(prob[0], std::exp(2.0) / z1, 1e-6);
  // penalty_last_n = 0 turns penalties off.
  p.penalty_last_n = 0;
  EXPECT_EQ(sampler.Sample(logits, history, p, rng), 0);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesSubtract) {
  Sampler sampler(3);
  const std::vector<float> logits = {1.0f, 1.0f, 1.0f};
  SamplingParams p = Neutral();
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  const std::vector<int32_t> history = {0, 0, 0, 1, 7 /* ignored: outside the vocabulary */};
  const auto dist = sampler.Distribution(logits, history, p);
  std::map<int32_t, float> prob(dist.begin(), dist.end());
  const double l0 = 1.0 - 0.5 - 0.75, l1 = 1.0 - 0.5 - 0.25, l2 = 1.0;
  const double z = std::exp(l0) + std::exp(l1) + std::exp(l2);
  EXPECT_NEAR(prob[0], std::exp(l0) / z, 1e-6);
  EXPECT_NEAR(prob[1], std::exp(l1) / z, 1e-6);
  EXPECT_NEAR(prob[2], std::exp(l2) / z, 1e-6);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  Sampler sampler(64);
  std::vector<float> logits(64);
  for (int i = 0; i < 64; ++i) logits[i] = static_cast<float>((i * 37) % 11) * 0.3f;
  SamplingParams p = Neutral(1.0f);
  p.top_k = 40;
  p.top_p = 0.95f;
  p.min_p = 0.01f;
  auto draw = [&](uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(sampler.Sample(logits, out, p, rng));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(SamplerTest, EmpiricalFrequenciesMatchTheDistribution) {
  Sampler sampler(5);
  const std::vector<double> probs = {0.05, 0.4, 0.1, 0.3, 0.15};
  const std::vector<float> logits = LogitsOf(probs);
  Rng rng(12345);
  const int n = 40000;
  std::vector<int> counts(5, 0);
  for (int i = 0; i < n; ++i) ++counts[sampler.Sample(logits, {}, Neutral(), rng)];
  for (int t = 0; t < 5; ++t) {
    const double expected = n * probs[t];
    const double sigma = std::sqrt(n * probs[t] * (1 - probs[t]));
    EXPECT_NEAR(counts[t], expected, 5 * sigma) << "token " << t;
  }
}

TEST(SamplerTest, ShortLogitRowNeverPicksAMissingToken) {
  Sampler sampler(4);
  Rng rng(3);
  const std::vector<float> logits = {0.0f, 1.0f};
  for (int i = 0; i < 100; ++i) EXPECT_LT(sampler.Sample(logits, {}, Neutral(), rng), 2);
}

}  // namespace
}  // namespace bitfleet::worker

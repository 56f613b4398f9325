// DistributedSampler over 1-4 thread ranks against Sampler on the whole row: the same tokens
// for every mode (greedy, top-k, top-p, min-p, temperature alone, penalties), the same tokens
// on every rank, and a bounded number of collectives.
#include "worker/distributed_sampling.h"

#include <cmath>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sharding/fake_communicator.h"
#include "sharding/shard_plan.h"

namespace bitfleet::worker {
namespace {

constexpr int kVocab = 1000;  // not a multiple of 3: slices differ in width

// Logits like a small LM's: a few strong tokens over a noisy floor; `ties` repeats values.
std::vector<float> RandomLogits(uint64_t seed, bool ties) {
  Rng rng(seed);
  std::vector<float> logits(kVocab);
  for (float& v : logits) v = static_cast<float>(rng.Uniform() * 6.0 - 3.0);
  for (int i = 0; i < 8; ++i) logits[rng.Next() % kVocab] += 6.0f;
  if (ties) {
    for (int i = 0; i < kVocab; i += 7) logits[i] = 2.5f;
  }
  return logits;
}

std::vector<SamplingParams> ParamSets() {
  std::vector<SamplingParams> sets;
  SamplingParams p;
  p.temperature = 0;  // greedy
  sets.push_back(p);
  p = SamplingParams{};  // temperature alone
  p.temperature = 0.8f;
  sets.push_back(p);
  p.top_k = 40;  // top-k
  sets.push_back(p);
  p.top_p = 0.9f;  // top-k + top-p
  p.min_p = 0.05f;
  sets.push_back(p);
  p = SamplingParams{};  // top-p alone: the prefix may need several candidate rounds
  p.temperature = 1.3f;
  p.top_p = 0.97f;
  sets.push_back(p);
  p = SamplingParams{};  // min-p alone
  p.min_p = 0.02f;
  sets.push_back(p);
  p = SamplingParams{};  // llama.cpp's defaults with penalties
  p.temperature = 0.8f;
  p.top_k = 40;
  p.top_p = 0.95f;
  p.min_p = 0.05f;
  p.repeat_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.2f;
  sets.push_back(p);
  p.top_k = 0;  // penalties with top-p
  sets.push_back(p);
  // logit_bias on tokens of every slice (ids 0, 333, 500, 999): a ban, a boost, small nudges.
  for (float temperature : {0.0f, 0.9f}) {
    p = SamplingParams{};
    p.temperature = temperature;
    p.top_k = temperature > 0 ? 20 : 0;
    p.repeat_penalty = 1.2f;
    p.logit_bias = {{0, 3.0f}, {333, -100.0f}, {500, 7.5f}, {999, 0.5f}};
    sets.push_back(p);
  }
  // Constrained decoding: every 7th token and a few others allowed, across every slice.
  static const std::vector<uint64_t> allowed = [] {
    std::vector<uint64_t> mask((kVocab + 63) / 64, 0);
    for (int t = 0; t < kVocab; t += 7) mask[t / 64] |= uint64_t{1} << (t % 64);
    for (int t : {1, 334, 998, 999}) mask[t / 64] |= uint64_t{1} << (t % 64);
    return mask;
  }();
  for (float temperature : {0.0f, 1.1f}) {
    p = SamplingParams{};
    p.temperature = temperature;
    p.top_p = 0.9f;
    p.allowed_tokens = allowed;
    sets.push_back(p);
  }
  // Only three tokens, all in the first slice: the other ranks' slices are wholly -inf (a JSON
  // mask early in a document), in every mode.
  static const std::vector<uint64_t> few = [] {
    std::vector<uint64_t> mask((kVocab + 63) / 64, 0);
    for (int t : {3, 5, 17}) mask[t / 64] |= uint64_t{1} << (t % 64);
    return mask;
  }();
  for (int mode = 0; mode < 4; ++mode) {
    p = SamplingParams{};
    p.temperature = mode == 0 ? 0.0f : 1.0f;
    if (mode == 2) p.top_k = 10;
    if (mode == 3) p.top_p = 0.95f;
    p.allowed_tokens = few;
    sets.push_back(p);
  }
  return sets;
}

// Samples `draws` rows per parameter set on `tp` thread ranks, in batches of 5 rows, and
// compares with Sampler.
void ExpectSameTokensAsSampler(int tp) {
  SCOPED_TRACE("TP=" + std::to_string(tp));
  const std::vector<SamplingParams> sets = ParamSets();
  constexpr int kRows = 5;
  constexpr int kBatches = 12;
  // Reference: Sampler on whole rows, one Rng per (set, row) stream.
  std::vector<int32_t> history = {5, 17, 17, 999, 3, 512, 17};
  std::vector<std::vector<int32_t>> want(sets.size());
  {
    Sampler sampler(kVocab);
    for (size_t s = 0; s < sets.size(); ++s) {
      std::vector<Rng> rngs;
      for (int r = 0; r < kRows; ++r) rngs.emplace_back(100 * s + r);
      for (int b = 0; b < kBatches; ++b) {
        for (int r = 0; r < kRows; ++r) {
          const std::vector<float> logits = RandomLogits(1000 * b + r, b % 3 == 0);
          want[s].push_back(sampler.Sample(logits, history, sets[s], rngs[r]));
        }
      }
    }
  }
  sharding::FakeGroup group(tp, std::chrono::seconds(30));
  std::vector<std::vector<std::vector<int32_t>>> got(tp, std::vector<std::vector<int32_t>>(sets.size()));
  std::vector<Status> status(tp);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < tp; ++rank) {
    threads.emplace_back([&, rank] {
      const sharding::Range slice = sharding::BalancedRange(kVocab, 1, tp, rank);
      DistributedSampler sampler(*group.rank(rank), kVocab, static_cast<int32_t>(slice.begin),
                                 static_cast<int32_t>(slice.size()));
      for (size_t s = 0; s < sets.size() && status[rank].ok(); ++s) {
        std::vector<Rng> rngs;
        for (int r = 0; r < kRows; ++r) rngs.emplace_back(100 * s + r);
        for (int b = 0; b < kBatches; ++b) {
          std::vector<std::vector<float>> logits;
          std::vector<ShardedLogitsRow> rows;
          for (int r = 0; r < kRows; ++r) logits.push_back(RandomLogits(1000 * b + r, b % 3 == 0));
          for (int r = 0; r < kRows; ++r) {
            rows.push_back({std::span<const float>(logits[r]).subspan(slice.begin, slice.size()), history, &sets[s],
                            &rngs[r]});
          }
          std::vector<int32_t> tokens(kRows);
          status[rank] = sampler.SampleBatch(rows, tokens);
          if (!status[rank].ok()) break;
          got[rank][s].insert(got[rank][s].end(), tokens.begin(), tokens.end());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < tp; ++rank) {
    ASSERT_TRUE(status[rank].ok()) << status[rank];
    for (size_t s = 0; s < sets.size(); ++s) EXPECT_EQ(got[rank][s], want[s]) << "rank " << rank << ", set " << s;
  }
}

TEST(DistributedSamplingTest, MatchesSamplerOnOneRank) { ExpectSameTokensAsSampler(1); }
TEST(DistributedSamplingTest, MatchesSamplerOnTwoRanks) { ExpectSameTokensAsSampler(2); }
TEST(DistributedSamplingTest, MatchesSamplerOnThreeUnevenRanks) { ExpectSameTokensAsSampler(3); }
TEST(DistributedSamplingTest, MatchesSamplerOnFourRanks) { ExpectSameTokensAsSampler(4); }

// Greedy and top-k take one all-gather per batch however many rows; temperature alone one more.
TEST(DistributedSamplingTest, CollectivesPerBatchAreBounded) {
  sharding::FakeGroup group(2);
  struct Counting final : sharding::Communicator {
    sharding::Communicator* inner;
    int gathers = 0;
    explicit Counting(sharding::Communicator* c) : inner(c) {}
    int rank() const override { return inner->rank(); }
    int size() const override { return inner->size(); }
    const char* backend() const override { return "counting"; }
    Status AllReduceSum(float* d, size_t n) override { return inner->AllReduceSum(d, n); }
    Status AllReduceMax(float* d, size_t n) override { return inner->AllReduceMax(d, n); }
    Status AllGather(const void* s, size_t b, void* r) override {
      ++gathers;
      return inner->AllGather(s, b, r);
    }
    Status Broadcast(void* d, size_t b, int root) override { return inner->Broadcast(d, b, root); }
    Status Barrier() override { return inner->Barrier(); }
    double seconds_in_collectives() const override { return inner->seconds_in_collectives(); }
  };
  std::vector<int> gathers(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      Counting comm(group.rank(rank));
      const sharding::Range slice = sharding::BalancedRange(kVocab, 1, 2, rank);
      DistributedSampler sampler(comm, kVocab, static_cast<int32_t>(slice.begin), static_cast<int32_t>(slice.size()));
      SamplingParams greedy, top_k, plain;
      greedy.temperature = 0;
      top_k.top_k = 20;
      plain.temperature = 0.7f;
      std::vector<Rng> rngs(16);
      std::vector<std::vector<float>> logits;
      for (int r = 0; r < 16; ++r) logits.push_back(RandomLogits(r, false));
      std::vector<ShardedLogitsRow> rows;
      for (int r = 0; r < 16; ++r) {
        rows.push_back({std::span<const float>(logits[r]).subspan(slice.begin, slice.size()), {},
                        r % 2 ? &greedy : &top_k, &rngs[r]});
      }
      std::vector<int32_t> tokens(16);
      ASSERT_TRUE(sampler.SampleBatch(rows, tokens).ok());
      EXPECT_EQ(comm.gathers, 1);
      rows[3].params = &plain;
      ASSERT_TRUE(sampler.SampleBatch(rows, tokens).ok());
      gathers[rank] = comm.gathers;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(gathers[0], 3);
  EXPECT_EQ(gathers[1], 3);
}

TEST(DistributedSamplingTest, RejectsRowsOfTheWrongWidth) {
  sharding::SingleRankCommunicator single;
  DistributedSampler sampler(single, kVocab, 0, kVocab);
  std::vector<float> short_row(kVocab - 1, 0.0f);
  SamplingParams p;
  Rng rng(1);
  auto token = sampler.Sample(short_row, {}, p, rng);
  EXPECT_EQ(token.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitfleet::worker

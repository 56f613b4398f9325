// The CUDA sampling reductions against plain host computations of the same definitions
// (kernels/cuda/sampling_launch.h): ties, -inf and NaN logits included.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/sampling_launch.h"
#include "tests/gpu/gpu_test_util.h"

namespace bitfleet::kernels::cuda {
namespace {

using gputest::DeviceArray;

struct Cand {
  float value;
  int64_t index;
};

bool Better(const Cand& a, const Cand& b) { return a.value > b.value || (a.value == b.value && a.index < b.index); }
float Clean(float x) { return std::isnan(x) ? -INFINITY : x; }

std::vector<float> RandomLogits(int n_rows, int64_t stride, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(n_rows) * stride);
  for (float& f : x) {
    const uint64_t r = rng() % 1000;
    f = r < 5 ? 7.5f : r == 5 ? -INFINITY : r == 6 ? NAN : std::round(normal(rng) * 8.0f) / 8.0f;  // many ties
  }
  return x;
}

TEST(SamplingCudaTest, ArgMaxTopKAndNormaliser) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(5);
  for (int iter = 0; iter < 25; ++iter) {
    LogitRows rows;
    rows.n_rows = 1 + static_cast<int>(rng() % 6);
    rows.n_cols = 1 + static_cast<int64_t>(rng() % 60000);
    rows.row_stride = rows.n_cols + static_cast<int64_t>(rng() % 5);
    rows.index_offset = static_cast<int64_t>(rng() % 100000);
    const std::vector<float> x = RandomLogits(rows.n_rows, rows.row_stride, rng);
    DeviceArray<float> x_dev(x);
    rows.logits = x_dev.get();
    const int k = static_cast<int>(std::min<int64_t>(rows.n_cols, std::vector<int>{1, 5, 40, 256}[rng() % 4]));

    DeviceArray<float> best_v(rows.n_rows), topk_v(static_cast<size_t>(rows.n_rows) * k), max_v(rows.n_rows),
        sum_v(rows.n_rows);
    DeviceArray<int64_t> best_i(rows.n_rows), topk_i(static_cast<size_t>(rows.n_rows) * k);
    std::vector<float> inv_t(rows.n_rows);
    for (float& f : inv_t) f = 0.5f + static_cast<float>(rng() % 100) / 50.0f;
    DeviceArray<float> inv_t_dev(inv_t);
    BF_ASSERT_LAUNCH(LaunchArgMax(rows, best_v.get(), best_i.get(), nullptr));
    BF_ASSERT_LAUNCH(LaunchTopK(rows, k, topk_v.get(), topk_i.get(), nullptr));
    BF_ASSERT_LAUNCH(LaunchMaxSumExp(rows, inv_t_dev.get(), max_v.get(), sum_v.get(), nullptr));
    const std::vector<float> bv = best_v.ToHost(), tv = topk_v.ToHost(), mv = max_v.ToHost(), sv = sum_v.ToHost();
    const std::vector<int64_t> bi = best_i.ToHost(), ti = topk_i.ToHost();

    for (int r = 0; r < rows.n_rows; ++r) {
      std::vector<Cand> all(rows.n_cols);
      for (int64_t c = 0; c < rows.n_cols; ++c) all[c] = {Clean(x[r * rows.row_stride + c]), rows.index_offset + c};
      std::sort(all.begin(), all.end(), Better);
      ASSERT_EQ(bi[r], all[0].index) << "row " << r;
      ASSERT_EQ(bv[r], all[0].value);
      for (int j = 0; j < k; ++j) {
        ASSERT_EQ(ti[r * k + j], all[j].index) << "row " << r << " rank " << j;
        ASSERT_EQ(tv[r * k + j], all[j].value);
      }
      double m = -INFINITY;
      for (const Cand& c : all) m = std::max(m, static_cast<double>(c.value * inv_t[r]));
      double s = 0.0;
      for (const Cand& c : all) s += std::exp(static_cast<double>(c.value * inv_t[r]) - m);
      ASSERT_EQ(mv[r], static_cast<float>(m));
      ASSERT_NEAR(sv[r], s, 1e-5 * s) << "row " << r;
    }
  }
}

TEST(SamplingCudaTest, GumbelArgMaxMatchesHostNoise) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(6);
  for (int iter = 0; iter < 20; ++iter) {
    LogitRows rows;
    rows.n_rows = 1 + static_cast<int>(rng() % 8);
    rows.n_cols = 1 + static_cast<int64_t>(rng() % 50000);
    rows.row_stride = rows.n_cols;
    rows.index_offset = static_cast<int64_t>(rng() % 100000);
    const std::vector<float> x = RandomLogits(rows.n_rows, rows.row_stride, rng);
    std::vector<float> inv_t(rows.n_rows);
    std::vector<uint64_t> seeds(rows.n_rows);
    for (int r = 0; r < rows.n_rows; ++r) inv_t[r] = 0.25f + static_cast<float>(rng() % 100) / 25.0f, seeds[r] = rng();
    DeviceArray<float> x_dev(x), inv_t_dev(inv_t), out_v(rows.n_rows);
    DeviceArray<uint64_t> seeds_dev(seeds);
    DeviceArray<int64_t> out_i(rows.n_rows);
    rows.logits = x_dev.get();
    BF_ASSERT_LAUNCH(LaunchGumbelArgMax(rows, inv_t_dev.get(), seeds_dev.get(), out_v.get(), out_i.get(), nullptr));
    const std::vector<float> v = out_v.ToHost();
    const std::vector<int64_t> idx = out_i.ToHost();
    for (int r = 0; r < rows.n_rows; ++r) {
      Cand best{-INFINITY, INT64_MAX};
      for (int64_t c = 0; c < rows.n_cols; ++c) {
        const int64_t id = rows.index_offset + c;
        const float key = Clean(static_cast<float>(static_cast<double>(Clean(x[r * rows.row_stride + c])) * inv_t[r] +
                                                   GumbelNoise(seeds[r], id)));
        if (Better({key, id}, best)) best = {key, id};
      }
      // Device and host log() may differ in the last bit: a different winner is allowed only
      // for a near-tie.
      if (idx[r] != best.index) {
        ASSERT_NEAR(v[r], best.value, 1e-6 * std::fabs(best.value)) << "row " << r;
      } else {
        ASSERT_EQ(v[r], best.value);
      }
    }
  }
}

}  // namespace
}  // namespace bitfleet::kernels::cuda

// The CUDA sampling reductions against plain host computations of the same definitions
// (kernels/cuda/sampling_launch.h): ties, -inf and NaN logits included.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/sampling_launch.h"
#include "tests/gpu/gpu_test_util.h"

namespace bitfleet::kernels::cuda {
namespace {

using gputest::DeviceArray;
using gputest::GuardedDeviceFloats;

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

Cand HostArgMax(const std::vector<float>& x, int64_t begin, int64_t n, int64_t index_offset) {
  Cand best{-INFINITY, INT64_MAX};
  for (int64_t c = 0; c < n; ++c) {
    const Cand cand{Clean(x[begin + c]), index_offset + c};
    if (Better(cand, best)) best = cand;
  }
  return best;
}

// Vocabulary-length rows at every 16-byte misalignment (the kernel's float4 body, head and
// tail), with the maximum tied at far-apart ids, NaNs, and all -inf / all NaN rows.
TEST(SamplingCudaTest, ArgMaxLongRowsAtEveryAlignment) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(7);
  const std::vector<int64_t> lengths = {128256, 128257, 131071, 4099, 1, 2, 3, 5, 4096 * 4 + 3};
  int case_id = 0;
  for (const int64_t n_cols : lengths) {
    for (int64_t base = 0; base < 4; ++base, ++case_id) {
      LogitRows rows;
      rows.n_rows = 5;
      rows.n_cols = n_cols;
      rows.row_stride = n_cols + static_cast<int64_t>(rng() % 7);  // odd strides: rows start misaligned
      rows.index_offset = static_cast<int64_t>(rng() % 3) * 64128;
      std::vector<float> x = RandomLogits(rows.n_rows, rows.row_stride, rng);
      // Row 0: the maximum tied at the first, a middle and the last column (lowest id wins).
      // Row 1: the maximum only at the last column. Row 2: all -inf. Row 3: all NaN but one -inf
      // near the end (NaN counts as -inf; lowest id wins). Row 4: random.
      auto at = [&](int r, int64_t c) -> float& { return x[r * rows.row_stride + c]; };
      at(0, n_cols - 1) = 100.0f, at(0, n_cols / 2) = 100.0f, at(0, 0) = 100.0f;
      if (n_cols >= 3) at(0, 0) = 99.0f;  // then the middle one wins over the last
      at(1, n_cols - 1) = 1000.0f;
      for (int64_t c = 0; c < n_cols; ++c) at(2, c) = -INFINITY, at(3, c) = NAN;
      at(3, n_cols - 1) = -INFINITY;
      std::vector<float> padded(base + x.size());  // shifts every row by `base` floats
      std::copy(x.begin(), x.end(), padded.begin() + base);
      DeviceArray<float> x_dev(padded);
      rows.logits = x_dev.get() + base;
      GuardedDeviceFloats best_v(rows.n_rows);
      DeviceArray<int64_t> best_i(rows.n_rows);
      BF_ASSERT_LAUNCH(LaunchArgMax(rows, best_v.data(), best_i.get(), nullptr));
      std::string error;
      const std::vector<float> bv = best_v.Check(&error);
      ASSERT_EQ(error, "") << "case " << case_id;
      const std::vector<int64_t> bi = best_i.ToHost();
      for (int r = 0; r < rows.n_rows; ++r) {
        const Cand want = HostArgMax(x, r * rows.row_stride, n_cols, rows.index_offset);
        ASSERT_EQ(bi[r], want.index) << "case " << case_id << " cols " << n_cols << " shift " << base << " row " << r;
        ASSERT_EQ(bv[r], want.value) << "case " << case_id << " row " << r;
      }
      ASSERT_EQ(bi[2], rows.index_offset);  // all -inf: the first id
      ASSERT_EQ(bv[2], -INFINITY);
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

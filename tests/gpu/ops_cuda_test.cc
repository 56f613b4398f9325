// The CUDA elementwise ops against the references of kernels/ref/ops_ref.h on random shapes,
// with the budgets of docs/cuda.md and sentinel-guarded outputs.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/matmul_launch.h"
#include "kernels/cuda/ops_launch.h"
#include "kernels/ref/ops_ref.h"
#include "tests/gpu/gpu_test_util.h"

namespace bitfleet::kernels::cuda {
namespace {

using gputest::DeviceArray;
using gputest::GuardedDeviceFloats;

constexpr int kShapes = 40;

std::vector<float> RandomFloats(size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return v;
}

// |got - want| <= rel * |want| + abs for every element.
void ExpectClose(const char* what, const std::vector<float>& got, const std::vector<float>& want, double rel,
                 double abs) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    ASSERT_LE(err, rel * std::fabs(want[i]) + abs) << what << " element " << i << ": got " << got[i] << " want "
                                                   << want[i];
  }
}

TEST(OpsCudaTest, RmsNormAndSumSquares) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(1);
  for (int iter = 0; iter < kShapes; ++iter) {
    const int n_tokens = 1 + static_cast<int>(rng() % 9);
    const int dim = 1 + static_cast<int>(rng() % 5000);
    const float eps = iter % 2 ? 1e-5f : 1e-6f;
    const std::vector<float> x = RandomFloats(static_cast<size_t>(n_tokens) * dim, rng, 3.0f);
    const std::vector<float> w = RandomFloats(dim, rng);
    DeviceArray<float> x_dev(x), w_dev(w);
    std::string error;

    GuardedDeviceFloats y(x.size());
    BF_ASSERT_LAUNCH(LaunchRmsNorm(x_dev.get(), w_dev.get(), n_tokens, dim, eps, y.data(), nullptr));
    std::vector<float> want(x.size());
    ref::RmsNormRef(x.data(), w.data(), n_tokens, dim, eps, want.data());
    const std::vector<float> got = y.Check(&error);
    ASSERT_EQ(error, "");
    ExpectClose("RmsNorm", got, want, 2e-6, 1e-30);

    GuardedDeviceFloats sum_sq(n_tokens);
    BF_ASSERT_LAUNCH(LaunchSumSquares(x_dev.get(), n_tokens, dim, sum_sq.data(), nullptr));
    std::vector<float> want_ss(n_tokens);
    ref::SumSquaresRef(x.data(), n_tokens, dim, want_ss.data());
    const std::vector<float> got_ss = sum_sq.Check(&error);
    ASSERT_EQ(error, "");
    ExpectClose("SumSquares", got_ss, want_ss, 2e-6, 0.0);

    // The sharded sub-norm: this rank holds `dim` of `full_dim` columns.
    const int full_dim = dim * (1 + static_cast<int>(rng() % 4));
    std::vector<float> full_ss(n_tokens);
    for (int t = 0; t < n_tokens; ++t) full_ss[t] = want_ss[t] * (1.0f + static_cast<float>(rng() % 100) / 50.0f);
    DeviceArray<float> ss_dev(full_ss);
    GuardedDeviceFloats y2(x.size());
    BF_ASSERT_LAUNCH(LaunchRmsNormWithSumSquares(x_dev.get(), w_dev.get(), n_tokens, dim, ss_dev.get(), full_dim, eps,
                                                 y2.data(), nullptr));
    std::vector<float> want2(x.size());
    ref::RmsNormWithSumSquaresRef(x.data(), w.data(), n_tokens, dim, full_ss.data(), full_dim, eps, want2.data());
    const std::vector<float> got2 = y2.Check(&error);
    ASSERT_EQ(error, "");
    ExpectClose("RmsNormWithSumSquares", got2, want2, 2e-6, 1e-30);

    // In place.
    BF_ASSERT_LAUNCH(LaunchRmsNorm(x_dev.get(), w_dev.get(), n_tokens, dim, eps, x_dev.get(), nullptr));
    ExpectClose("RmsNorm in place", x_dev.ToHost(), want, 2e-6, 1e-30);
  }
}

TEST(OpsCudaTest, Rope) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(2);
  for (int iter = 0; iter < kShapes; ++iter) {
    const int n_tokens = 1 + static_cast<int>(rng() % 17);
    const int n_heads = 1 + static_cast<int>(rng() % 8);
    const int head_dim = 2 * (1 + static_cast<int>(rng() % 80));
    const int rot_dim = iter % 3 == 0 ? 2 * (1 + static_cast<int>(rng() % (head_dim / 2))) : head_dim;
    const bool neox = iter % 2 == 1;
    const float base = iter % 4 == 0 ? 500000.0f : 10000.0f;
    std::vector<int32_t> pos(n_tokens);
    for (int32_t& p : pos) p = static_cast<int32_t>(rng() % 40000);
    std::vector<float> x = RandomFloats(static_cast<size_t>(n_tokens) * n_heads * head_dim, rng, 2.0f);
    DeviceArray<float> x_dev(x);
    DeviceArray<int32_t> pos_dev(pos);
    BF_ASSERT_LAUNCH(LaunchRope(x_dev.get(), pos_dev.get(), n_tokens, n_heads, head_dim, rot_dim, base, neox, nullptr));
    std::vector<float> want = x;
    ref::RopeRef(want.data(), pos.data(), n_tokens, n_heads, head_dim, rot_dim, base, neox);
    const std::vector<float> got = x_dev.ToHost();
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_LE(std::fabs(got[i] - want[i]), 1e-6 * (std::fabs(x[i]) + 1.0)) << "element " << i;
    }
  }
}

TEST(OpsCudaTest, GatesAndAdd) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(3);
  for (int iter = 0; iter < kShapes; ++iter) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 300000);
    std::vector<float> gate = RandomFloats(n, rng, 4.0f);
    std::vector<float> up = RandomFloats(n, rng);
    if (iter == 0) gate[0] = -100.0f, gate[n - 1] = 100.0f;  // exp over/underflow sides
    DeviceArray<float> g_dev(gate), u_dev(up);
    std::string error;

    GuardedDeviceFloats out(n);
    BF_ASSERT_LAUNCH(LaunchSiluMul(g_dev.get(), u_dev.get(), n, out.data(), nullptr));
    std::vector<float> want(n);
    ref::SiluMulRef(gate.data(), up.data(), n, want.data());
    std::vector<float> got = out.Check(&error);
    ASSERT_EQ(error, "");
    ExpectClose("SiluMul", got, want, 2e-6, 1e-30);

    out.Reset();
    BF_ASSERT_LAUNCH(LaunchRelu2Mul(g_dev.get(), u_dev.get(), n, out.data(), nullptr));
    ref::Relu2MulRef(gate.data(), up.data(), n, want.data());
    got = out.Check(&error);
    ASSERT_EQ(error, "");
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), n * sizeof(float))) << "Relu2Mul is bit-exact";

    out.Reset();
    BF_ASSERT_LAUNCH(LaunchAdd(g_dev.get(), u_dev.get(), n, out.data(), nullptr));
    for (int64_t i = 0; i < n; ++i) want[i] = gate[i] + up[i];
    got = out.Check(&error);
    ASSERT_EQ(error, "");
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), n * sizeof(float))) << "Add is bit-exact";
  }
}

TEST(OpsCudaTest, AddRowBiasAddsTheBiasToEveryRowExactly) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(13);
  for (int iter = 0; iter < kShapes; ++iter) {
    const int n_tokens = static_cast<int>(rng() % 70);
    const int dim = 1 + static_cast<int>(rng() % 3000);
    const size_t n = static_cast<size_t>(std::max(n_tokens, 1)) * dim;
    const std::vector<float> x = RandomFloats(n, rng, 3.0f);
    const std::vector<float> bias = RandomFloats(static_cast<size_t>(dim), rng);
    DeviceArray<float> x_dev(x), bias_dev(bias);
    BF_ASSERT_LAUNCH(LaunchAddRowBias(x_dev.get(), bias_dev.get(), n_tokens, dim, nullptr));
    const std::vector<float> got = x_dev.ToHost();
    std::vector<float> want = x;
    for (int t = 0; t < n_tokens; ++t) {
      for (int i = 0; i < dim; ++i) want[static_cast<size_t>(t) * dim + i] += bias[i];
    }
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), n * sizeof(float))) << n_tokens << " x " << dim;
  }
}

TEST(OpsCudaTest, GatherRowsCopiesTheNamedRowsExactly) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(11);
  for (int iter = 0; iter < 8; ++iter) {
    const int n_src = 1 + static_cast<int>(rng() % 600);
    const int64_t row_floats = 1 + static_cast<int64_t>(rng() % 3000);
    const int n_rows = static_cast<int>(rng() % 70);
    const std::vector<float> src = RandomFloats(static_cast<size_t>(n_src) * row_floats, rng);
    std::vector<int32_t> rows(std::max(n_rows, 1));
    for (int32_t& r : rows) r = static_cast<int32_t>(rng() % n_src);
    DeviceArray<float> src_dev(src);
    DeviceArray<int32_t> rows_dev(rows);
    GuardedDeviceFloats out(static_cast<size_t>(std::max(n_rows, 1)) * row_floats);
    BF_ASSERT_LAUNCH(LaunchGatherRows(src_dev.get(), rows_dev.get(), n_rows, row_floats, out.data(), nullptr));
    if (n_rows == 0) continue;  // nothing written (the guard would flag the untouched row)
    std::string error;
    const std::vector<float> got = out.Check(&error);
    ASSERT_EQ(error, "");
    for (int r = 0; r < n_rows; ++r) {
      ASSERT_EQ(0, std::memcmp(got.data() + r * row_floats, src.data() + rows[r] * row_floats,
                               row_floats * sizeof(float)))
          << "row " << r << " (source row " << rows[r] << ")";
    }
  }
}

TEST(OpsCudaTest, RejectsBadShapes) {
  BF_REQUIRE_GPU();
  EXPECT_EQ(cudaErrorInvalidValue, LaunchRope(nullptr, nullptr, 1, 1, 8, 9, 1e4f, false, nullptr));
  EXPECT_EQ(cudaErrorInvalidValue, LaunchRmsNorm(nullptr, nullptr, 1, 0, 1e-5f, nullptr, nullptr));
  EXPECT_EQ(cudaSuccess, LaunchSiluMul(nullptr, nullptr, 0, nullptr, nullptr));
  EXPECT_EQ(cudaErrorInvalidValue, LaunchGatherRows(nullptr, nullptr, -1, 4, nullptr, nullptr));
  EXPECT_EQ(cudaSuccess, LaunchGatherRows(nullptr, nullptr, 0, 4, nullptr, nullptr));
  EXPECT_EQ(cudaErrorInvalidValue, LaunchAddRowBias(nullptr, nullptr, 1, 0, nullptr));
  EXPECT_EQ(cudaSuccess, LaunchAddRowBias(nullptr, nullptr, 0, 8, nullptr));
}

// The fused norm + quantization launchers against the unfused sequence they replace (Add or
// Relu2Mul, RmsNorm, then QuantizeActivations with the token's own absmax or
// QuantizeActivationBlocks): q, absmax, block sums, block steps and the residual written back,
// bit for bit, at both scalings.
TEST(OpsCudaTest, FusedNormQuantizeMatchesUnfusedBitForBit) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(0xF05E);
  for (int iter = 0; iter < kShapes; ++iter) {
    const int n_tokens = 1 + static_cast<int>(rng() % 9);
    const int dim = 1 + static_cast<int>(rng() % 7000);
    const int64_t stride = ActivationStride(dim);
    const float eps = iter % 2 ? 1e-5f : 1e-6f;
    const size_t n = static_cast<size_t>(n_tokens) * dim;
    std::vector<float> x = RandomFloats(n, rng, 3.0f);
    if (iter % 5 == 0) x[rng() % n] = NAN;  // NaN rows: quantized to 0 by both paths
    const std::vector<float> other = RandomFloats(n, rng, 2.0f);
    const std::vector<float> w = RandomFloats(dim, rng);
    SCOPED_TRACE(::testing::Message() << n_tokens << " x " << dim);
    for (const bool per_block : {false, true}) {
      for (int variant = 0; variant < 3; ++variant) {
        SCOPED_TRACE(::testing::Message() << "variant " << variant << (per_block ? " per block" : " per token"));
        const size_t n32 = static_cast<size_t>(n_tokens) * (stride / 32);
        DeviceArray<float> x_ref(x), x_fused(x), other_dev(other), w_dev(w), y(n);
        DeviceArray<int8_t> q_ref(static_cast<size_t>(n_tokens) * stride);
        DeviceArray<int8_t> q_fused(static_cast<size_t>(n_tokens) * stride);
        DeviceArray<float> a_ref(n_tokens), a_fused(n_tokens);
        DeviceArray<int32_t> s_ref(n32), s_fused(n32);
        DeviceArray<float> steps_ref(n32), steps_fused(n32);
        const float* norm_in = x_ref.get();
        if (variant == 1) {
          BF_ASSERT_LAUNCH(LaunchAdd(x_ref.get(), other_dev.get(), static_cast<int64_t>(n), x_ref.get(), nullptr));
        } else if (variant == 2) {
          BF_ASSERT_LAUNCH(LaunchRelu2Mul(x_ref.get(), other_dev.get(), static_cast<int64_t>(n), y.get(), nullptr));
          norm_in = y.get();
        }
        BF_ASSERT_LAUNCH(LaunchRmsNorm(norm_in, w_dev.get(), n_tokens, dim, eps, y.get(), nullptr));
        if (per_block) {
          BF_ASSERT_LAUNCH(LaunchQuantizeActivationBlocks(y.get(), n_tokens, dim, stride, q_ref.get(), a_ref.get(),
                                                          s_ref.get(), steps_ref.get(), nullptr));
        } else {
          BF_ASSERT_LAUNCH(LaunchQuantizeActivations(y.get(), n_tokens, dim, nullptr, stride, q_ref.get(),
                                                     a_ref.get(), s_ref.get(), steps_ref.get(), nullptr));
        }
        if (variant == 0) {
          BF_ASSERT_LAUNCH(LaunchRmsNormQuantize(x_fused.get(), w_dev.get(), n_tokens, dim, eps, per_block, stride,
                                                 q_fused.get(), a_fused.get(), s_fused.get(), steps_fused.get(),
                                                 nullptr));
        } else if (variant == 1) {
          BF_ASSERT_LAUNCH(LaunchAddRmsNormQuantize(x_fused.get(), other_dev.get(), w_dev.get(), n_tokens, dim, eps,
                                                    per_block, stride, q_fused.get(), a_fused.get(), s_fused.get(),
                                                    steps_fused.get(), nullptr));
        } else {
          BF_ASSERT_LAUNCH(LaunchRelu2MulRmsNormQuantize(x_fused.get(), other_dev.get(), w_dev.get(), n_tokens, dim,
                                                         eps, per_block, stride, q_fused.get(), a_fused.get(),
                                                         s_fused.get(), steps_fused.get(), nullptr));
        }
        ASSERT_EQ(q_fused.ToHost(), q_ref.ToHost());
        const std::vector<float> am_ref = a_ref.ToHost();
        const std::vector<float> am_fused = a_fused.ToHost();
        ASSERT_EQ(0, std::memcmp(am_fused.data(), am_ref.data(), am_ref.size() * sizeof(float)));
        ASSERT_EQ(s_fused.ToHost(), s_ref.ToHost());
        const std::vector<float> st_ref = steps_ref.ToHost();
        const std::vector<float> st_fused = steps_fused.ToHost();
        ASSERT_EQ(0, std::memcmp(st_fused.data(), st_ref.data(), st_ref.size() * sizeof(float))) << "block steps";
        const std::vector<float> xr = x_ref.ToHost();
        const std::vector<float> xf = x_fused.ToHost();
        ASSERT_EQ(0, std::memcmp(xf.data(), xr.data(), n * sizeof(float))) << "x after the fused kernel";
      }
    }
  }
}

}  // namespace
}  // namespace bitfleet::kernels::cuda

// Every op variant against kernels/ref/ops_ref.h on random shapes, outputs sentinel-guarded.
// Budgets as in docs/kernels.md ("Error budgets").
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "core/fp16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/matmul_cpu.h"
#include "kernels/ops.h"
#include "kernels/ref/ops_ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace bitfleet::kernels {
namespace {

using testing::GuardedFloats;
using testing::GuardedCodes;
using testing::GuardedHalves;

constexpr int kShapes = 60;
constexpr double kNormRel = 2e-6;  // RmsNorm family, relative to |y|, plus kNormAbs
constexpr double kNormAbs = 1e-30;
constexpr double kSumSqRel = 2e-6;  // sum of squares, relative
constexpr double kExpRel = 2e-6;    // SiLU outputs, relative (vector exp ~2e-7)
// Softmax p_i, relative: x_i - max is rounded to float (0.5 ulp of |x_i - max|, which the exp
// turns into a relative error), plus the float sum over up to 7000 terms.
constexpr double kSoftmaxRelPerUnit = 2e-7;
constexpr double kSoftmaxRel = 5e-6;
constexpr double kAttnRel = 2e-5;  // attention output, relative to max |V|

std::vector<float> Normal(size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

int RandInt(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

TEST(OpsEquivalence, RmsNormFamily) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < kShapes; ++i) {
    const int n_tokens = RandInt(rng, 1, 9);
    const int dim = RandInt(rng, 1, 3000);
    const float eps = i % 2 ? 1e-5f : 1e-6f;
    const std::vector<float> x = Normal(size_t{1} * n_tokens * dim, rng, std::exp(RandInt(rng, -3, 3) * 1.0f));
    const std::vector<float> w = Normal(dim, rng);
    std::vector<float> want(x.size()), want_ss(n_tokens), want_sub(x.size());
    ref::RmsNormRef(x.data(), w.data(), n_tokens, dim, eps, want.data());
    ref::SumSquaresRef(x.data(), n_tokens, dim, want_ss.data());
    const int full_dim = dim * 3;  // a shard of a 3-way split
    ref::RmsNormWithSumSquaresRef(x.data(), w.data(), n_tokens, dim, want_ss.data(), full_dim, eps, want_sub.data());
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " shape " << i << " dim " << dim);
      GuardedFloats y(x.size()), ss(n_tokens), sub(x.size());
      cpu::RmsNormWith(*k, x.data(), w.data(), n_tokens, dim, eps, y.data());
      cpu::SumSquaresWith(*k, x.data(), n_tokens, dim, ss.data());
      cpu::RmsNormWithSumSquaresWith(*k, x.data(), w.data(), n_tokens, dim, want_ss.data(), full_dim, eps, sub.data());
      ASSERT_TRUE(y.Intact() && ss.Intact() && sub.Intact());
      for (size_t j = 0; j < x.size(); ++j) {
        ASSERT_NEAR(y.data()[j], want[j], kNormRel * std::fabs(want[j]) + kNormAbs) << j;
        ASSERT_NEAR(sub.data()[j], want_sub[j], kNormRel * std::fabs(want_sub[j]) + kNormAbs) << j;
      }
      for (int t = 0; t < n_tokens; ++t) ASSERT_NEAR(ss.data()[t], want_ss[t], kSumSqRel * want_ss[t]);
      // In place is allowed.
      std::vector<float> inplace = x;
      cpu::RmsNormWith(*k, inplace.data(), w.data(), n_tokens, dim, eps, inplace.data());
      for (size_t j = 0; j < x.size(); ++j) ASSERT_EQ(inplace[j], y.data()[j]);
    }
  }
}

TEST(OpsEquivalence, GatesAndSoftmax) {
  std::mt19937_64 rng(2);
  for (int i = 0; i < kShapes; ++i) {
    const int64_t n = RandInt(rng, 1, 7000);
    std::vector<float> gate = Normal(n, rng, 4.0f);
    if (i == 0) gate[0] = 120.0f, gate[n - 1] = -120.0f;  // exp overflow / underflow edges
    const std::vector<float> up = Normal(n, rng);
    std::vector<float> want_silu(n), want_relu2(n);
    ref::SiluMulRef(gate.data(), up.data(), n, want_silu.data());
    ref::Relu2MulRef(gate.data(), up.data(), n, want_relu2.data());
    std::vector<float> logits = Normal(n, rng, 5.0f);
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    std::vector<float> want_soft = logits;
    ref::SoftmaxRef(want_soft.data(), static_cast<int>(n));
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " n " << n);
      GuardedFloats silu(n), relu2(n), soft(n);
      cpu::SiluMulWith(*k, gate.data(), up.data(), n, silu.data());
      cpu::Relu2MulWith(*k, gate.data(), up.data(), n, relu2.data());
      std::copy(logits.begin(), logits.end(), soft.data());
      cpu::SoftmaxWith(*k, soft.data(), static_cast<int>(n));
      ASSERT_TRUE(silu.Intact() && relu2.Intact() && soft.Intact());
      for (int64_t j = 0; j < n; ++j) {
        ASSERT_NEAR(silu.data()[j], want_silu[j], kExpRel * std::fabs(want_silu[j]) + 1e-30) << j;
        ASSERT_EQ(relu2.data()[j], want_relu2[j]) << j;
        const double spread = std::fabs(logits[j] - max_logit);
        ASSERT_NEAR(soft.data()[j], want_soft[j], want_soft[j] * (kSoftmaxRelPerUnit * spread + kSoftmaxRel) + 1e-37)
            << j;
      }
    }
  }
}

// ArgMax must pick exactly the reference's index: the first of equal maxima, NaNs skipped,
// -inf a real value, 0 when nothing but NaN. Values are drawn from a small set so ties are common.
TEST(OpsEquivalence, ArgMax) {
  std::mt19937_64 rng(9);
  const float values[] = {-INFINITY, -3.0f, -0.0f, 0.0f, 1.5f, 2.0f, INFINITY, NAN};
  for (int i = 0; i < 400; ++i) {
    const int64_t n = i < 40 ? i : RandInt(rng, 1, 40000);
    std::vector<float> x(n);
    const int kind = i % 4;
    for (float& v : x) {
      if (kind == 0) {
        v = Normal(1, rng, 3.0f)[0];  // distinct values
      } else if (kind == 1) {
        v = values[rng() % std::size(values)];  // ties, infinities, NaNs
      } else if (kind == 2) {
        v = rng() % 8 ? NAN : -INFINITY;  // mostly NaN: the first non-NaN may be anywhere
      } else {
        v = values[rng() % 3];  // only -inf, -3 and -0: long runs of equal maxima
      }
    }
    const int64_t want = ref::ArgMaxRef(x.data(), n);
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      ASSERT_EQ(k->arg_max(x.data(), n), want) << k->name << " n " << n << " kind " << kind;
    }
  }
  const float all_nan[] = {NAN, NAN, NAN};
  for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
    EXPECT_EQ(k->arg_max(all_nan, 3), 0) << k->name;
    EXPECT_EQ(k->arg_max(all_nan, 0), 0) << k->name;
    const float nan_first[] = {NAN, -1.0f, 4.0f, 4.0f};
    EXPECT_EQ(k->arg_max(nan_first, 4), 2) << k->name;
  }
}

TEST(OpsEquivalence, Rope) {
  std::mt19937_64 rng(3);
  std::vector<int32_t> pos;
  for (int i = 0; i < kShapes; ++i) {
    const int n_tokens = RandInt(rng, 1, 8);
    const int head_dim = 2 * RandInt(rng, 1, 80);
    const int rot_dim = 2 * RandInt(rng, 1, head_dim / 2);  // partial rotation included
    const bool neox = i % 2 == 1;
    const float base = i % 7 == 3 ? 500000.0f : 10000.0f;
    // Rope caches the angles of its last positions: keep them (same length or not) now and
    // then, as consecutive layers of a step do, and change one position in place sometimes.
    if (i % 3 != 2 || static_cast<int>(pos.size()) != n_tokens) {
      pos.resize(n_tokens);
      for (int32_t& p : pos) p = RandInt(rng, 0, i < 30 ? 4096 : 131072);
    } else if (i % 2 == 0) {
      pos[n_tokens - 1] += 1;
    }
    // Q-like and K-like tensors (different head counts) at the same positions, one after the other.
    for (int n_heads : {RandInt(rng, 1, 6), RandInt(rng, 1, 3)}) {
      const std::vector<float> x = Normal(size_t{1} * n_tokens * n_heads * head_dim, rng);
      std::vector<float> want = x;
      ref::RopeRef(want.data(), pos.data(), n_tokens, n_heads, head_dim, rot_dim, base, neox);
      std::vector<float> got = x;
      Rope(got.data(), pos.data(), n_tokens, n_heads, head_dim, rot_dim, base, neox);
      for (size_t j = 0; j < x.size(); ++j) {
        const int d = static_cast<int>(j % head_dim);
        if (d >= rot_dim) {
          ASSERT_EQ(got[j], x[j]) << "dims past rot_dim stay";
        } else {
          ASSERT_NEAR(got[j], want[j], 1e-6 * (std::fabs(x[j]) + 1.0)) << "shape " << i << " element " << j;
        }
      }
    }
  }
}

// A paged KV cache (f16, or int8 with its steps) with shuffled block ids and guards around every
// pool.
struct KvFixture {
  KvFixture(int n_kv_heads, int head_dim, int block_size, int n_pos, std::mt19937_64& rng, bool int8 = false)
      : blocks((n_pos + block_size - 1) / block_size + 2),
        elems(static_cast<size_t>(blocks) * block_size * n_kv_heads * head_dim),
        k(int8 ? 0 : elems),
        v(int8 ? 0 : elems),
        k8(int8 ? elems : 0),
        v8(int8 ? elems : 0),
        k_steps(int8 ? elems / KvInt8Group(head_dim) : 0),
        v_steps(int8 ? elems / KvInt8Group(head_dim) : 0) {
    kv = PagedKv{k.data(), v.data(), block_size, n_kv_heads, head_dim, blocks};
    if (int8) {
      kv.k = kv.v = nullptr;
      kv.k8 = k8.data();
      kv.v8 = v8.data();
      kv.k_steps = k_steps.data();
      kv.v_steps = v_steps.data();
    }
    for (int b = 0; b < blocks; ++b) table.push_back(b);
    std::shuffle(table.begin(), table.end(), rng);
  }
  bool Intact() const {
    return k.Intact() && v.Intact() && k8.Intact() && v8.Intact() && k_steps.Intact() && v_steps.Intact();
  }
  int blocks;
  size_t elems;
  GuardedHalves k;
  GuardedHalves v;
  GuardedCodes k8;
  GuardedCodes v8;
  GuardedFloats k_steps;
  GuardedFloats v_steps;
  PagedKv kv;
  std::vector<int32_t> table;
};

// Asserts that positions [0, n_pos) of `got` hold the same bits as `want` (same table): halves,
// or codes and steps.
void ExpectSameKv(const PagedKv& got, const PagedKv& want, const int32_t* table, int n_pos) {
  const int group = KvInt8Group(want.head_dim);
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    return u;
  };
  for (int p = 0; p < n_pos; ++p) {
    for (int g = 0; g < want.n_kv_heads; ++g) {
      const uint64_t off = ref::PagedKvOffset(want, table, p, g);
      for (int d = 0; d < want.head_dim; ++d) {
        if (want.int8()) {
          ASSERT_EQ(got.k8[off + d], want.k8[off + d]) << p << " " << g << " " << d;
          ASSERT_EQ(got.v8[off + d], want.v8[off + d]) << p << " " << g << " " << d;
          if (d % group == 0) {
            ASSERT_EQ(bits(got.k_steps[(off + d) / group]), bits(want.k_steps[(off + d) / group]));
            ASSERT_EQ(bits(got.v_steps[(off + d) / group]), bits(want.v_steps[(off + d) / group]));
          }
        } else {
          ASSERT_EQ(got.k[off + d], want.k[off + d]) << p << " " << g << " " << d;
          ASSERT_EQ(got.v[off + d], want.v[off + d]) << p << " " << g << " " << d;
        }
      }
    }
  }
}

// Random keys and values of positions [0, pos0 + n_tokens), queries of the last n_tokens
// positions, and the reference attention over them in a paged cache (`want_kv`, f16 or int8).
struct AttentionCase {
  AttentionCase(int n_kv_heads, int n_heads, int head_dim, int block_size, int pos0, int n_tokens, float q_sigma,
                std::mt19937_64& rng, bool int8 = false)
      : n_pos(pos0 + n_tokens),
        kv_row(static_cast<size_t>(n_kv_heads) * head_dim),
        keys(Normal(n_pos * kv_row, rng)),
        values(Normal(n_pos * kv_row, rng, 2.0f)),
        q(Normal(static_cast<size_t>(n_tokens) * n_heads * head_dim, rng, q_sigma)),
        scale(1.0f / std::sqrt(static_cast<float>(head_dim))),
        want_kv(n_kv_heads, head_dim, block_size, n_pos, rng, int8),
        want(q.size()) {
    for (float f : values) max_v = std::max(max_v, std::fabs(f));
    ref::WriteKvRef(want_kv.kv, want_kv.table.data(), 0, n_pos, keys.data(), values.data());
    ref::AttentionPagedRef(q.data(), n_tokens, n_heads, want_kv.kv, want_kv.table.data(), pos0, scale, want.data());
  }
  int n_pos;
  size_t kv_row;
  std::vector<float> keys, values, q;
  float scale;
  float max_v = 0.0f;
  KvFixture want_kv;
  std::vector<float> want;
};

// Both cache types: each variant writes the cache with the reference's bits, and attends over it
// as the reference does.
TEST(OpsEquivalence, WriteKvAndAttention) {
  std::mt19937_64 rng(4);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  for (int i = 0; i < 2 * kShapes; ++i) {
    const bool int8 = i % 2 == 1;
    ThreadPool& pool = i % 8 >= 4 ? pool3 : pool2;
    // Every fifth shape has many KV heads (BitNet-700M: 16 × 1), so units cover ranges of
    // several KV heads.
    const int n_kv_heads = i % 5 == 4 ? RandInt(rng, 5, 20) : RandInt(rng, 1, 4);
    const int group = i % 5 == 4 ? RandInt(rng, 1, 2) : RandInt(rng, 1, 4);
    const int n_heads = n_kv_heads * group;
    // Any size; whole 16-lane chunks that leave part of a 64-dim slab (80, 144, ...: the
    // prefill tile kernel's masked slab); whole 64-dim slabs.
    const int head_dim = i % 3 == 0   ? RandInt(rng, 1, 150)
                         : i % 6 == 1 ? 16 * RandInt(rng, 1, 11)
                                      : 64 * RandInt(rng, 1, 2);
    const int block_size = i % 4 == 0 ? 1 + RandInt(rng, 0, 31) : 16;
    const int pos0 = i % 3 == 1 ? 0 : RandInt(rng, 0, 300);
    const int n_tokens = RandInt(rng, 1, i % 4 >= 2 ? 24 : 3);
    const AttentionCase c(n_kv_heads, n_heads, head_dim, block_size, pos0, n_tokens, 1.0f, rng, int8);
    const int n_pos = c.n_pos;
    const size_t kv_row = c.kv_row;
    const std::vector<float>& keys = c.keys;
    const std::vector<float>& values = c.values;
    const std::vector<float>& q = c.q;
    const KvFixture& want_kv = c.want_kv;

    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << (int8 ? " int8" : " f16") << " shape " << i << " heads "
                                        << n_heads << "/" << n_kv_heads << " hd " << head_dim << " pos0 " << pos0
                                        << " n " << n_tokens);
      KvFixture got_kv(n_kv_heads, head_dim, block_size, n_pos, rng, int8);
      got_kv.table = want_kv.table;
      // Written in two calls: the prompt, then the new tokens (as prefill + decode do).
      cpu::WriteKvWith(*k, got_kv.kv, got_kv.table.data(), 0, pos0, keys.data(), values.data());
      cpu::WriteKvWith(*k, got_kv.kv, got_kv.table.data(), pos0, n_tokens, keys.data() + pos0 * kv_row,
                       values.data() + pos0 * kv_row);
      ASSERT_TRUE(got_kv.Intact());
      ExpectSameKv(got_kv.kv, want_kv.kv, got_kv.table.data(), n_pos);
      const bool threaded = i % 4 < 2;
      const int64_t per_thread = AttentionScratchFloats(pos0, n_tokens);
      GuardedFloats scratch(per_thread * (threaded ? pool.size() : 1));
      GuardedFloats out(q.size());
      cpu::AttentionPagedWith(*k, q.data(), n_tokens, n_heads, got_kv.kv, got_kv.table.data(), pos0, c.scale, out.data(),
                              scratch.data(), threaded ? &pool : nullptr);
      ASSERT_TRUE(out.Intact() && scratch.Intact() && got_kv.Intact());
      for (size_t j = 0; j < q.size(); ++j) ASSERT_NEAR(out.data()[j], c.want[j], kAttnRel * c.max_v) << j;
    }
  }
}

// What an int8 cache holds: each group's step is its absmax / 127 and every element reads back
// within half a step (plus the f16 rounding of the value read); a group holding a NaN or an
// infinity gets a NaN step and zero codes, and attention over that position is NaN (as an f16
// cache holding the same row gives), in the reference and every variant.
TEST(OpsEquivalence, Int8KvHoldsEachGroupWithinHalfAStep) {
  std::mt19937_64 rng(15);
  for (int head_dim : {8, 20, 32, 64, 96, 128}) {
    const int n_kv_heads = 2;
    const int n_pos = 40;
    const int group = KvInt8Group(head_dim);
    const size_t kv_row = static_cast<size_t>(n_kv_heads) * head_dim;
    std::vector<float> keys = Normal(n_pos * kv_row, rng, 3.0f);
    std::vector<float> values = Normal(n_pos * kv_row, rng, 0.5f);
    std::fill(keys.begin() + 3 * kv_row, keys.begin() + 3 * kv_row + group, 0.0f);  // an all-zero group
    keys[5 * kv_row + 1] = 1000.0f;                                               // an outlier
    values[7 * kv_row + 2] = std::numeric_limits<float>::quiet_NaN();            // position 7, KV head 0
    keys[9 * kv_row + head_dim] = -std::numeric_limits<float>::infinity();       // position 9, KV head 1
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " hd " << head_dim);
      KvFixture f(n_kv_heads, head_dim, 16, n_pos, rng, /*int8=*/true);
      cpu::WriteKvWith(*k, f.kv, f.table.data(), 0, n_pos, keys.data(), values.data());
      ASSERT_TRUE(f.Intact());
      for (int p = 0; p < n_pos; ++p) {
        for (int g = 0; g < n_kv_heads; ++g) {
          const uint64_t off = ref::PagedKvOffset(f.kv, f.table.data(), p, g);
          for (int d0 = 0; d0 < head_dim; d0 += group) {
            for (const bool is_k : {true, false}) {
              const float* x = (is_k ? keys.data() : values.data()) + p * kv_row + g * head_dim + d0;
              const float step = (is_k ? f.kv.k_steps : f.kv.v_steps)[(off + d0) / group];
              bool finite = true;
              float absmax = 0.0f;
              for (int d = 0; d < group; ++d) {
                finite = finite && std::isfinite(x[d]);
                absmax = std::max(absmax, std::fabs(x[d]));
              }
              if (!finite) {
                ASSERT_TRUE(std::isnan(step)) << p << " " << g << " " << d0;
                for (int d = 0; d < group; ++d) ASSERT_EQ((is_k ? f.kv.k8 : f.kv.v8)[off + d0 + d], 0);
                continue;
              }
              ASSERT_EQ(step, absmax / 127.0f) << p << " " << g << " " << d0;
              for (int d = 0; d < group; ++d) {
                const float got = ref::KvValueRef(f.kv, is_k, off + d0 + d);
                ASSERT_LE(std::fabs(got - x[d]), 0.5f * step + std::fabs(x[d]) / 1024.0f) << p << " " << d0 + d;
              }
            }
          }
        }
      }
      // One query token at position 12 (it sees positions 7 and 9) per head.
      const int n_heads = 2 * n_kv_heads;
      const std::vector<float> q = Normal(static_cast<size_t>(n_heads) * head_dim, rng);
      std::vector<float> want(q.size()), got(q.size());
      ref::AttentionPagedRef(q.data(), 1, n_heads, f.kv, f.table.data(), 12, 0.25f, want.data());
      cpu::AttentionPagedWith(*k, q.data(), 1, n_heads, f.kv, f.table.data(), 12, 0.25f, got.data(), nullptr, nullptr);
      // Heads 0 and 1 read KV head 0, whose V group 0 at position 7 is poisoned: those dims only.
      // Heads 2 and 3 read KV head 1, whose K at position 9 is: every score, so every dim.
      for (size_t j = 0; j < q.size(); ++j) {
        const bool poisoned = j / head_dim >= 2 || static_cast<int>(j % head_dim) < group;
        ASSERT_EQ(std::isnan(want[j]), poisoned) << j;
        ASSERT_EQ(std::isnan(got[j]), poisoned) << j;
      }
    }
  }
}

TEST(OpsEquivalence, Int8KvDequantizationIsBitExact) {
  std::mt19937_64 rng(16);
  for (int i = 0; i < 200; ++i) {
    const int group = i % 3 == 0 ? RandInt(rng, 1, 40) : 16 * RandInt(rng, 1, 4);
    const int n = group * RandInt(rng, 1, 5) - (i % 5 == 0 ? RandInt(rng, 0, group - 1) : 0);
    std::vector<int8_t> q(n);
    for (int8_t& c : q) c = static_cast<int8_t>(RandInt(rng, -128, 127));
    std::vector<float> steps((n + group - 1) / group);
    for (float& s : steps) s = std::ldexp(1.0f + static_cast<float>(rng() % 4096) / 4096.0f, RandInt(rng, -30, 12));
    if (i % 7 == 0) steps[0] = std::numeric_limits<float>::quiet_NaN();
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      GuardedHalves got(n);
      k->dequant_i8_f16(q.data(), steps.data(), n, group, got.data());
      ASSERT_TRUE(got.Intact()) << k->name;
      for (int j = 0; j < n; ++j) {
        const uint16_t want = FloatToHalf(static_cast<float>(q[j]) * steps[j / group]);
        ASSERT_EQ(got.data()[j], want) << k->name << " case " << i << " group " << group << " element " << j;
      }
    }
  }
}

// Decode of one token with a long context on a pool: the context is split over the threads
// (split-K) and the partial softmax states merged. Contexts from just above the split
// threshold to a few thousand positions, MHA and GQA, shuffled block tables.
TEST(OpsEquivalence, DecodeAttentionSplitsTheContext) {
  std::mt19937_64 rng(9);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  for (int i = 0; i < 24; ++i) {
    ThreadPool& pool = i % 2 ? pool3 : pool2;
    const int n_kv_heads = i % 2 ? RandInt(rng, 8, 16) : RandInt(rng, 1, 5);
    const int group = i % 2 ? 1 : RandInt(rng, 1, 5);
    const int n_heads = n_kv_heads * group;
    const int head_dim = i % 4 == 3 ? RandInt(rng, 1, 100) : 32 * RandInt(rng, 1, 4);
    const int block_size = i % 3 == 0 ? RandInt(rng, 1, 40) : 16;
    const int pos0 = i % 5 == 0 ? RandInt(rng, 63, 70) : RandInt(rng, 64, 2500);
    const bool int8 = i % 3 == 2;
    const AttentionCase c(n_kv_heads, n_heads, head_dim, block_size, pos0, 1, 1.5f, rng, int8);
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << (int8 ? " int8" : " f16") << " case " << i << " heads " << n_heads << "/" << n_kv_heads
                                        << " hd " << head_dim << " block " << block_size << " pos0 " << pos0);
      GuardedFloats scratch(AttentionScratchFloats(pos0, 1) * pool.size());
      GuardedFloats out(c.q.size());
      cpu::AttentionPagedWith(*k, c.q.data(), 1, n_heads, c.want_kv.kv, c.want_kv.table.data(), pos0, c.scale,
                              out.data(), scratch.data(), &pool);
      ASSERT_TRUE(out.Intact() && scratch.Intact());
      for (size_t j = 0; j < c.q.size(); ++j) ASSERT_NEAR(out.data()[j], c.want[j], kAttnRel * c.max_v) << j;
    }
  }
}

// Decode tokens of sequences whose block tables share their first blocks (a prompt prefix shared
// through the prefix cache): AttentionSharedPrefix equals the reference per sequence. Groups that
// fill several tiles or part of one (group 8: four sequences per tile), head_dims the tile kernel
// takes and one it does not (40: the per-sequence fallback), tokens right after the prefix or up
// to 60 positions on, block sizes other than 16, with and without a pool.
TEST(OpsEquivalence, SharedPrefixDecodeAttentionEqualsEachSequence) {
  std::mt19937_64 rng(12);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  for (int i = 0; i < 24; ++i) {
    ThreadPool* pool = i % 3 == 0 ? nullptr : i % 3 == 1 ? &pool2 : &pool3;
    const int n_kv_heads = RandInt(rng, 1, 4);
    const int group = i % 4 == 3 ? 8 : RandInt(rng, 1, 4);
    const int n_heads = n_kv_heads * group;
    const int head_dim = i % 5 == 4 ? 40 : 16 * RandInt(rng, 2, 8);
    const int block_size = i % 4 == 0 ? RandInt(rng, 3, 20) : 16;
    const int shared_blocks = RandInt(rng, 1, 12);
    const int shared = shared_blocks * block_size;
    const int n_seqs = RandInt(rng, 1, 20);
    std::vector<int32_t> pos(n_seqs);
    int max_own = 0;
    for (int32_t& p : pos) {
      const int own = RandInt(rng, 0, 60);
      p = shared + own;
      max_own = std::max(max_own, own);
    }
    // The shared blocks, then each sequence's own, all at shuffled ids.
    const int own_blocks = (max_own + block_size) / block_size;
    const int total_blocks = shared_blocks + n_seqs * own_blocks;
    const size_t kv_row = static_cast<size_t>(n_kv_heads) * head_dim;
    const bool int8 = i % 3 == 1;
    KvFixture pools(n_kv_heads, head_dim, block_size, total_blocks * block_size, rng, int8);
    const PagedKv& kv = pools.kv;
    std::vector<int32_t> ids(total_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::vector<std::vector<int32_t>> tables(n_seqs);
    float max_v = 0.0f;
    auto write = [&](const std::vector<int32_t>& table, int pos0, int n) {
      const std::vector<float> keys = Normal(static_cast<size_t>(n) * kv_row, rng);
      const std::vector<float> values = Normal(static_cast<size_t>(n) * kv_row, rng, 2.0f);
      for (float f : values) max_v = std::max(max_v, std::fabs(f));
      ref::WriteKvRef(kv, table.data(), pos0, n, keys.data(), values.data());
    };
    for (int s = 0; s < n_seqs; ++s) {
      tables[s].assign(ids.begin(), ids.begin() + shared_blocks);
      tables[s].insert(tables[s].end(), ids.begin() + shared_blocks + s * own_blocks,
                       ids.begin() + shared_blocks + (s + 1) * own_blocks);
      if (s == 0) write(tables[0], 0, shared);
      write(tables[s], shared, pos[s] + 1 - shared);
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const size_t q_row = static_cast<size_t>(n_heads) * head_dim;
    const std::vector<float> q = Normal(n_seqs * q_row, rng);
    std::vector<float> want(q.size());
    std::vector<const float*> q_ptrs(n_seqs);
    std::vector<const int32_t*> table_ptrs(n_seqs);
    for (int s = 0; s < n_seqs; ++s) {
      ref::AttentionPagedRef(q.data() + s * q_row, 1, n_heads, kv, tables[s].data(), pos[s], scale,
                             want.data() + s * q_row);
      q_ptrs[s] = q.data() + s * q_row;
      table_ptrs[s] = tables[s].data();
    }
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << (int8 ? " int8" : " f16") << " case " << i << " heads "
                                        << n_heads << "/" << n_kv_heads << " hd " << head_dim << " block "
                                        << block_size << " shared " << shared << " sequences " << n_seqs);
      GuardedFloats out(q.size());
      std::vector<float*> out_ptrs(n_seqs);
      for (int s = 0; s < n_seqs; ++s) out_ptrs[s] = out.data() + s * q_row;
      cpu::AttentionSharedPrefixWith(*k, q_ptrs.data(), n_seqs, n_heads, kv, table_ptrs.data(), pos.data(), shared,
                                     scale, out_ptrs.data(), pool);
      ASSERT_TRUE(out.Intact() && out.Written() && pools.Intact());
      for (size_t j = 0; j < q.size(); ++j) ASSERT_NEAR(out.data()[j], want[j], kAttnRel * max_v) << j;
    }
  }
}

// The attention helpers directly, against double sums: every (heads, head_dim, keys) tiling
// path, strided rows, outputs sentinel-guarded.
TEST(OpsEquivalence, AttentionScoreAndValueHelpers) {
  std::mt19937_64 rng(6);
  for (int i = 0; i < 3 * kShapes; ++i) {
    const int nq = RandInt(rng, 1, 9);
    const int hd = i % 3 == 0 ? RandInt(rng, 1, 160) : 16 * RandInt(rng, 1, 9);
    const int n_keys = RandInt(rng, 1, 40);
    const int64_t stride = hd + RandInt(rng, 0, 3) * 32;
    const std::vector<float> q = Normal(static_cast<size_t>(nq) * hd, rng);
    std::vector<uint16_t> kh(static_cast<size_t>(n_keys) * stride), vh(kh.size());
    for (uint16_t& h : kh) h = FloatToHalf(Normal(1, rng)[0]);
    for (uint16_t& h : vh) h = FloatToHalf(Normal(1, rng)[0]);
    const std::vector<float> p = Normal(static_cast<size_t>(nq) * n_keys, rng);
    const std::vector<float> acc0 = Normal(static_cast<size_t>(nq) * hd, rng);
    const float scale = 0.125f;
    std::vector<double> want_s(static_cast<size_t>(nq) * n_keys), want_acc(acc0.begin(), acc0.end());
    std::vector<double> mag_s(want_s.size()), mag_acc(want_acc.size());
    for (int h = 0; h < nq; ++h) {
      for (int j = 0; j < n_keys; ++j) {
        for (int d = 0; d < hd; ++d) {
          const double qk = double{q[h * hd + d]} * HalfToFloat(kh[j * stride + d]);
          want_s[h * n_keys + j] += scale * qk;
          mag_s[h * n_keys + j] += std::fabs(scale * qk);
          const double pv = double{p[h * n_keys + j]} * HalfToFloat(vh[j * stride + d]);
          want_acc[h * hd + d] += pv;
          mag_acc[h * hd + d] += std::fabs(pv);
        }
      }
    }
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " shape " << i << " nq " << nq << " hd " << hd << " keys "
                                        << n_keys);
      GuardedFloats s(want_s.size());
      k->qk_f16(q.data(), nq, hd, kh.data(), stride, n_keys, scale, s.data());
      ASSERT_TRUE(s.Intact() && s.Written());
      for (size_t j = 0; j < want_s.size(); ++j) ASSERT_NEAR(s.data()[j], want_s[j], 1e-6 * (mag_s[j] + 1e-3)) << j;
      GuardedFloats acc(acc0.size());
      std::copy(acc0.begin(), acc0.end(), acc.data());
      k->pv_f16(p.data(), nq, n_keys, vh.data(), stride, hd, acc.data());
      ASSERT_TRUE(acc.Intact());
      for (size_t j = 0; j < want_acc.size(); ++j) {
        ASSERT_NEAR(acc.data()[j], want_acc[j], 1e-6 * (mag_acc[j] + std::fabs(acc0[j]) + 1e-3)) << j;
      }
    }
  }
}

// qk_i8 / pv_i8 read an int8 cache's rows in place; they must give the bits of the rows
// dequantized (dequant_i8_f16) and read by qk_f16 / pv_f16, whose accuracy the test above checks.
// Both kinds of group (32, and the whole row of a head_dim that is no multiple of 32), strided
// rows, steps from subnormal to overflowing halves, and NaN steps.
TEST(OpsEquivalence, Int8KvAttentionHelpersMatchDequantizedRows) {
  std::mt19937_64 rng(17);
  const auto same_bits = [](float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; };
  int checked = 0;
  for (int i = 0; i < 3 * kShapes; ++i) {
    const int nq = RandInt(rng, 1, 9);
    const int hd = i % 3 == 0 ? RandInt(rng, 1, 160) : 32 * RandInt(rng, 1, 5);
    const int group = KvInt8Group(hd);
    const int n_keys = RandInt(rng, 1, 40);
    const int64_t stride = int64_t{hd} * RandInt(rng, 1, 4);  // rows of several KV heads
    const std::vector<float> q = Normal(static_cast<size_t>(nq) * hd, rng);
    const size_t n = static_cast<size_t>(n_keys) * stride;
    std::vector<int8_t> k8(n), v8(n);
    for (int8_t& c : k8) c = static_cast<int8_t>(RandInt(rng, -128, 127));
    for (int8_t& c : v8) c = static_cast<int8_t>(RandInt(rng, -128, 127));
    std::vector<float> k_steps(n / group), v_steps(n / group);
    for (std::vector<float>* steps : {&k_steps, &v_steps}) {
      for (float& f : *steps) f = std::ldexp(1.0f + static_cast<float>(rng() % 4096) / 4096.0f, RandInt(rng, -24, -4));
      if (i % 9 == 0) (*steps)[RandInt(rng, 0, static_cast<int>(steps->size()) - 1)] = std::ldexp(1.0f, 10);
      if (i % 11 == 0) (*steps)[RandInt(rng, 0, static_cast<int>(steps->size()) - 1)] = NAN;
    }
    const std::vector<float> p = Normal(static_cast<size_t>(nq) * n_keys, rng);
    const std::vector<float> acc0 = Normal(static_cast<size_t>(nq) * hd, rng);
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      if (k->qk_i8 == nullptr) continue;
      SCOPED_TRACE(::testing::Message() << k->name << " shape " << i << " nq " << nq << " hd " << hd << " keys "
                                        << n_keys << " stride " << stride);
      std::vector<uint16_t> kh(n), vh(n);
      k->dequant_i8_f16(k8.data(), k_steps.data(), static_cast<int64_t>(n), group, kh.data());
      k->dequant_i8_f16(v8.data(), v_steps.data(), static_cast<int64_t>(n), group, vh.data());
      std::vector<float> want_s(static_cast<size_t>(nq) * n_keys);
      k->qk_f16(q.data(), nq, hd, kh.data(), stride, n_keys, 0.125f, want_s.data());
      GuardedFloats s(want_s.size());
      k->qk_i8(q.data(), nq, hd, k8.data(), k_steps.data(), stride, group, n_keys, 0.125f, s.data());
      ASSERT_TRUE(s.Intact() && s.Written());
      for (size_t j = 0; j < want_s.size(); ++j) ASSERT_TRUE(same_bits(s.data()[j], want_s[j])) << j;
      std::vector<float> want_acc(acc0);
      k->pv_f16(p.data(), nq, n_keys, vh.data(), stride, hd, want_acc.data());
      GuardedFloats acc(acc0.size());
      std::copy(acc0.begin(), acc0.end(), acc.data());
      k->pv_i8(p.data(), nq, n_keys, v8.data(), v_steps.data(), stride, group, hd, acc.data());
      ASSERT_TRUE(acc.Intact());
      for (size_t j = 0; j < want_acc.size(); ++j) ASSERT_TRUE(same_bits(acc.data()[j], want_acc[j])) << j;
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no variant this CPU runs reads int8 rows in place (AVX-512 does)";
}

// Attention over an int8 cache gives exactly the bits of attention over an f16 cache holding its
// dequantized rows (dequant_i8_f16), in every variant and on every path: decode per token and
// split over threads, prefill per token and in tiles, and decode of sequences sharing a prefix,
// with paged blocks of any size. The in-place kernels (qk_i8, pv_i8, attend_run_i8) are what
// make this hold where they exist; elsewhere the rows are dequantized first.
TEST(OpsEquivalence, Int8CacheAttentionEqualsItsDequantizedRows) {
  std::mt19937_64 rng(19);
  ThreadPool pool(2);
  const auto same_bits = [](float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; };
  for (int i = 0; i < kShapes; ++i) {
    const int n_kv_heads = RandInt(rng, 1, 4);
    const int group = RandInt(rng, 1, 5);
    const int n_heads = n_kv_heads * group;
    const int head_dim = i % 3 == 0 ? RandInt(rng, 1, 100) : i % 3 == 1 ? 16 * RandInt(rng, 1, 9) : 64;
    const int block_size = i % 2 == 0 ? RandInt(rng, 1, 24) : 16;
    const int pos0 = RandInt(rng, 0, 200);
    const int n_tokens = i % 4 == 0 ? RandInt(rng, 4, 20) : i % 4 == 1 ? 2 : 1;
    const int n_pos = pos0 + n_tokens;
    KvFixture i8(n_kv_heads, head_dim, block_size, n_pos, rng, /*int8=*/true);
    KvFixture f16(n_kv_heads, head_dim, block_size, n_pos, rng);
    f16.table = i8.table;
    const std::vector<float> keys = Normal(static_cast<size_t>(n_pos) * n_kv_heads * head_dim, rng);
    const std::vector<float> values = Normal(keys.size(), rng, 2.0f);
    const std::vector<float> q = Normal(static_cast<size_t>(n_tokens) * n_heads * head_dim, rng);
    ref::WriteKvRef(i8.kv, i8.table.data(), 0, n_pos, keys.data(), values.data());
    const int kv_group = KvInt8Group(head_dim);
    for (int p = 0; p < n_pos; ++p) {
      for (int g = 0; g < n_kv_heads; ++g) {
        const uint64_t off = ref::PagedKvOffset(i8.kv, i8.table.data(), p, g);
        const cpu::CpuKernels& scalar = cpu::ScalarKernels();
        scalar.dequant_i8_f16(i8.kv.k8 + off, i8.kv.k_steps + off / kv_group, head_dim, kv_group, f16.kv.k + off);
        scalar.dequant_i8_f16(i8.kv.v8 + off, i8.kv.v_steps + off / kv_group, head_dim, kv_group, f16.kv.v + off);
      }
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      for (ThreadPool* threads : {static_cast<ThreadPool*>(nullptr), &pool}) {
        SCOPED_TRACE(::testing::Message() << k->name << " shape " << i << " heads " << n_heads << "/" << n_kv_heads
                                          << " hd " << head_dim << " block " << block_size << " pos0 " << pos0
                                          << " n " << n_tokens << (threads ? " pool" : ""));
        std::vector<float> want(q.size()), got(q.size());
        cpu::AttentionPagedWith(*k, q.data(), n_tokens, n_heads, f16.kv, f16.table.data(), pos0, scale, want.data(),
                                nullptr, threads);
        cpu::AttentionPagedWith(*k, q.data(), n_tokens, n_heads, i8.kv, i8.table.data(), pos0, scale, got.data(),
                                nullptr, threads);
        for (size_t j = 0; j < q.size(); ++j) ASSERT_TRUE(same_bits(got[j], want[j])) << j;
        if (n_tokens < 2) continue;
        // The tokens as sequences of their own that share the first pos0 + 1 positions.
        std::vector<const float*> qs(n_tokens);
        std::vector<float*> want_out(n_tokens), got_out(n_tokens);
        std::vector<const int32_t*> tables(n_tokens, i8.table.data());
        std::vector<int32_t> positions(n_tokens);
        const int64_t row = int64_t{n_heads} * head_dim;
        for (int t = 0; t < n_tokens; ++t) {
          qs[t] = q.data() + t * row;
          want_out[t] = want.data() + t * row;
          got_out[t] = got.data() + t * row;
          positions[t] = pos0 + t;
        }
        cpu::AttentionSharedPrefixWith(*k, qs.data(), n_tokens, n_heads, f16.kv, tables.data(), positions.data(),
                                       pos0 + 1, scale, want_out.data(), threads);
        cpu::AttentionSharedPrefixWith(*k, qs.data(), n_tokens, n_heads, i8.kv, tables.data(), positions.data(),
                                       pos0 + 1, scale, got_out.data(), threads);
        for (size_t j = 0; j < q.size(); ++j) ASSERT_TRUE(same_bits(got[j], want[j])) << "shared prefix " << j;
      }
    }
  }
}

TEST(OpsEquivalence, F16ConversionIsBitExact) {
  std::mt19937_64 rng(5);
  std::vector<float> x;
  for (int e = -30; e <= 17; ++e) {  // subnormal, normal and overflowing halves, ties included
    for (int i = 0; i < 200; ++i) {
      const float m = 1.0f + static_cast<float>(rng() % 8192) / 8192.0f;
      x.push_back((i % 2 ? -1.0f : 1.0f) * std::ldexp(m, e));
    }
  }
  x.push_back(65520.0f);  // rounds to inf
  x.push_back(65519.0f);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
    std::vector<uint16_t> got(x.size());
    k->f32_to_f16(x.data(), static_cast<int64_t>(x.size()), got.data());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], FloatToHalf(x[i])) << k->name << " " << x[i];
  }
}

}  // namespace
}  // namespace bitfleet::kernels

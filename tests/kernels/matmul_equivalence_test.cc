// Every matmul variant against the references of kernels/ref/matmul_ref.h, on random shapes
// (odd row counts, column tails, batch 1..64) with sentinel-guarded outputs. The budgets are
// those of docs/kernels.md; the observed worst case per type and variant is printed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/matmul_cpu.h"
#include "kernels/matmul.h"
#include "kernels/ref/matmul_ref.h"
#include "kernels/ref/quant.h"
#include "tests/kernels/kernel_test_util.h"

namespace bitfleet::kernels {
namespace {

using testing::GuardedFloats;

// Budgets (docs/kernels.md, "Error budgets"), all relative to the magnitude M = sum_c |w x| of
// the dot product (x as the kernel sees it):
// - kernel vs the exact int8 path (quantized types) and vs the double product (float types):
//   float accumulation only.
constexpr double kAccumRel = 1e-5;
// - int8 integer-view reference vs the dequantizing reference: both exact up to double rounding.
constexpr double kInt8RefRel = 1e-9;
constexpr int kShapesPerType = 60;
constexpr uint64_t kMaxWork = 3'000'000;  // rows × cols × tokens per shape, keeps CI fast

struct Shape {
  uint64_t rows;
  uint64_t cols;
  int n_tokens;
};

Shape RandomShape(DType type, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pct(0, 99);
  const uint64_t mult = testing::ColsMultiple(type);
  Shape s;
  const int p = pct(rng);
  s.n_tokens = p < 35 ? 1 : p < 60 ? 2 + pct(rng) % 7 : 9 + pct(rng) % 56;
  if (mult == 1) {
    s.cols = 1 + std::uniform_int_distribution<uint64_t>(0, 1600)(rng);
  } else {
    const uint64_t max_k = std::max<uint64_t>(1, 4096 / mult);
    s.cols = mult * std::uniform_int_distribution<uint64_t>(1, max_k)(rng);
  }
  s.rows = 1 + std::uniform_int_distribution<uint64_t>(0, 200)(rng);
  if (pct(rng) < 50) s.rows |= 1;  // odd row counts
  while (s.rows * s.cols * s.n_tokens > kMaxWork) {
    if (s.rows > 8) {
      s.rows = s.rows / 2 + 1;
    } else if (s.n_tokens > 1) {
      s.n_tokens /= 2;
    } else {
      s.cols = std::max(mult, s.cols / 2 / mult * mult);
    }
  }
  return s;
}

// Worst observed |error| / budget per variant.
using Worst = std::map<std::string, double>;

void CheckOutputs(const char* what, const std::string& variant, const GuardedFloats& out, std::span<const double> ref,
                  std::span<const double> budget, Worst* worst, const Shape& s) {
  ASSERT_TRUE(out.Intact()) << what << " " << variant << " wrote outside its output";
  ASSERT_TRUE(out.Written()) << what << " " << variant << " left outputs unwritten";
  double& w = (*worst)[variant];
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(static_cast<double>(out.data()[i]) - ref[i]);
    ASSERT_LE(err, budget[i]) << what << " " << variant << " output " << i << " (token " << i / s.rows << ", row "
                              << i % s.rows << ") of " << s.rows << "x" << s.cols << " batch " << s.n_tokens << ": got "
                              << out.data()[i] << " want " << ref[i];
    if (budget[i] > 0) w = std::max(w, err / budget[i]);
  }
}

class MatMulEquivalence : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulEquivalence, RandomShapesAllVariants) {
  const DType type = GetParam();
  const bool quantized = IsQuantized(type);
  std::mt19937_64 rng(0xb17f1ee7u + static_cast<uint32_t>(type));
  ThreadPool pool1(1);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  ThreadPool* pools[] = {&pool1, &pool2, &pool3};
  const auto variants = testing::VariantsToTest();
  Worst worst_accum;
  Worst worst_act;
  for (int shape_index = 0; shape_index < kShapesPerType; ++shape_index) {
    const Shape s = RandomShape(type, rng);
    SCOPED_TRACE(::testing::Message() << DTypeName(type) << " shape " << shape_index << ": " << s.rows << "x" << s.cols
                                      << " batch " << s.n_tokens);
    const std::vector<uint8_t> bytes = testing::RandomTensor(type, s.cols, s.rows, rng);
    auto packed = PackWeight(type, s.cols, s.rows, bytes);
    ASSERT_TRUE(packed.ok()) << packed.status();
    ASSERT_EQ((*packed)->stream_bytes(), bytes.size());
    const std::vector<float> x = testing::RandomActivations(s.n_tokens, s.cols, rng);
    const size_t n_out = static_cast<size_t>(s.n_tokens) * s.rows;

    // Q4/Q8 kernels run mostly on per-block activations (what MatMul makes for them) and also
    // on per-token ones (they take either); ternary ones on per-token activations.
    const bool per_block = ActScalingFor(type) == ActScaling::kPerBlock && shape_index % 3 != 1;
    // Per-token absmax; sometimes larger than the local max, as after a TP all-reduce.
    std::vector<float> absmax(s.n_tokens);
    ref::ComputeAbsMaxRef(x.data(), s.n_tokens, s.cols, absmax.data());
    const bool inflated = quantized && !per_block && (shape_index % 5 == 4);
    if (inflated) {
      for (float& a : absmax) a *= 1.5f;
    }

    // References: the float product (x as given), and for quantized types the exact int8 path.
    std::vector<double> ref_float(n_out), mag_float(n_out), abs_w(s.rows);
    ASSERT_TRUE(
        ref::MatMulDequantRef(type, s.cols, s.rows, bytes, x.data(), s.n_tokens, nullptr, ref_float, mag_float, abs_w)
            .ok());
    std::vector<double> ref_exact = ref_float, mag_exact = mag_float;
    if (quantized) {
      std::vector<int8_t> q(x.size());
      std::vector<double> ref_int8(n_out);
      if (per_block) {
        ASSERT_TRUE(
            ref::MatMulDequantBlocksRef(type, s.cols, s.rows, bytes, x.data(), s.n_tokens, ref_exact, mag_exact).ok());
        std::vector<float> steps(s.n_tokens * ref::ActBlocks(s.cols));
        ref::QuantizeActivationBlocksRef(x.data(), s.n_tokens, s.cols, q.data(), steps.data());
        ASSERT_TRUE(
            ref::MatMulInt8BlocksRef(type, s.cols, s.rows, bytes, q.data(), steps.data(), s.n_tokens, ref_int8).ok());
      } else {
        ASSERT_TRUE(ref::MatMulDequantRef(type, s.cols, s.rows, bytes, x.data(), s.n_tokens, absmax.data(), ref_exact,
                                          mag_exact)
                        .ok());
        ref::QuantizeActivationsRef(x.data(), s.n_tokens, s.cols, absmax.data(), q.data());
        ASSERT_TRUE(
            ref::MatMulInt8Ref(type, s.cols, s.rows, bytes, q.data(), absmax.data(), s.n_tokens, ref_int8).ok());
      }
      for (size_t i = 0; i < n_out; ++i) {
        ASSERT_NEAR(ref_int8[i], ref_exact[i], kInt8RefRel * mag_exact[i] + 1e-30) << "int8 reference, output " << i;
      }
    }
    std::vector<double> budget_accum(n_out), budget_act(n_out);
    for (size_t i = 0; i < n_out; ++i) {
      budget_accum[i] = kAccumRel * mag_exact[i] + 1e-30;
      // Activation rounding moves each x by at most absmax / 254 (per block: that block's
      // absmax / 254, no more than the row's): |error| <= absmax/254 * sum|w|.
      const int t = static_cast<int>(i / s.rows);
      budget_act[i] = (quantized ? absmax[t] / 254.0 * abs_w[i % s.rows] : 0.0) + kAccumRel * mag_float[i] +
                      kAccumRel * mag_exact[i] + 1e-30;
    }

    for (const cpu::CpuKernels* k : variants) {
      ThreadPool& pool = *pools[(shape_index + static_cast<int>(k->variant)) % 3];
      GuardedFloats out(n_out);
      if (quantized && (inflated || !per_block || shape_index % 2 == 0)) {
        QuantizedActivations act;
        if (shape_index % 4 == 0) act.Reserve(64, 4096);  // reserved up front vs grown on demand
        cpu::QuantizeActivationsWith(*k, x.data(), s.n_tokens, s.cols,
                                     per_block ? ActScaling::kPerBlock : ActScaling::kPerToken, absmax.data(), &act,
                                     nullptr);
        cpu::MatMulQuantizedWith(*k, **packed, act, out.data(), pool);
      } else {
        QuantizedActivations scratch;
        cpu::MatMulWith(*k, **packed, x.data(), s.n_tokens, out.data(), pool, &scratch);
      }
      CheckOutputs("matmul (accumulation budget)", k->name, out, ref_exact, budget_accum, &worst_accum, s);
      CheckOutputs("matmul (activation budget)", k->name, out, ref_float, budget_act, &worst_act, s);
    }
  }
  for (const auto& [variant, w] : worst_accum) {
    std::printf("[kernels] %-6s %-10s worst error / budget: accumulation %.3g, vs float activations %.3g\n",
                DTypeName(type), variant.c_str(), w, worst_act[variant]);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulEquivalence,
                         ::testing::Values(DType::kTQ2_0, DType::kTQ1_0, DType::kI2_S, DType::kQ4_0, DType::kQ4_1,
                                           DType::kQ8_0, DType::kF16, DType::kBF16, DType::kF32),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

// MatMulQuantizedGroup splits the rows of several weights (mixed types, row counts off the
// 16-row grain, so chunks straddle matrices mid-grain) over one parallel pass: every output
// must equal, bit for bit, one MatMulQuantizedWith call per weight with the same variant.
TEST(MatMulQuantizedGroup, EqualsOneCallPerWeight) {
  std::mt19937_64 rng(77);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  const DType types[] = {DType::kTQ2_0, DType::kTQ1_0, DType::kI2_S, DType::kQ4_0, DType::kQ4_1, DType::kQ8_0};
  for (int iter = 0; iter < 24; ++iter) {
    ThreadPool& pool = iter % 2 ? pool3 : pool2;
    const uint64_t cols = 256 * (1 + rng() % 6);  // a multiple of every type's block
    const int n_tokens = iter % 3 == 0 ? 1 : 1 + static_cast<int>(rng() % 40);
    const int n_jobs = 1 + static_cast<int>(rng() % 4);
    // Every other iteration per-block activations, with the Q4/Q8 types only.
    const ActScaling scaling = iter % 2 ? ActScaling::kPerBlock : ActScaling::kPerToken;
    const size_t first_type = scaling == ActScaling::kPerBlock ? 3 : 0;
    std::vector<std::unique_ptr<PackedWeight>> weights;
    for (int j = 0; j < n_jobs; ++j) {
      const DType type = types[first_type + rng() % (std::size(types) - first_type)];
      const uint64_t rows = (type == DType::kI2_S ? 128 : 1) * (1 + rng() % 3) + (type == DType::kI2_S ? 0 : rng() % 150);
      auto packed = PackWeight(type, cols, rows, testing::RandomTensor(type, cols, rows, rng));
      ASSERT_TRUE(packed.ok()) << packed.status();
      weights.push_back(std::move(*packed));
    }
    const std::vector<float> x = testing::RandomActivations(n_tokens, cols, rng);
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " iter " << iter << " cols " << cols << " batch " << n_tokens);
      QuantizedActivations act;
      std::vector<float> absmax(n_tokens);
      cpu::ComputeAbsMaxWith(*k, x.data(), n_tokens, cols, absmax.data());
      cpu::QuantizeActivationsWith(*k, x.data(), n_tokens, cols, scaling, absmax.data(), &act, nullptr);
      std::vector<GuardedFloats> grouped;
      std::vector<QuantMatMulJob> jobs;
      for (const auto& w : weights) grouped.emplace_back(static_cast<size_t>(n_tokens) * w->rows());
      for (size_t j = 0; j < weights.size(); ++j) jobs.push_back({weights[j].get(), grouped[j].data()});
      cpu::MatMulQuantizedGroupWith(*k, jobs, act, pool);
      for (size_t j = 0; j < weights.size(); ++j) {
        GuardedFloats single(static_cast<size_t>(n_tokens) * weights[j]->rows());
        cpu::MatMulQuantizedWith(*k, *weights[j], act, single.data(), pool);
        ASSERT_TRUE(grouped[j].Intact() && grouped[j].Written()) << "job " << j;
        for (size_t i = 0; i < single.size(); ++i) {
          ASSERT_EQ(grouped[j].data()[i], single.data()[i]) << "job " << j << " (" << DTypeName(weights[j]->type())
                                                            << " " << weights[j]->rows() << " rows) output " << i;
        }
      }
    }
  }
}

// The AMX ternary kernels have three paths by batch size (one token tile, two, more) and each
// handles a partial last row block. Ternary rows with one scale per row (what the AMX paths
// need) at batch sizes around the tile edges and row counts around the 16/32-row blocks: every
// variant equals the integer reference within the accumulation budget.
TEST(MatMulQuantized, TernaryBatchesAroundTileEdges) {
  std::mt19937_64 rng(1588);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ThreadPool pool2(2);
  const auto variants = testing::VariantsToTest();
  for (const DType type : {DType::kTQ2_0, DType::kTQ1_0}) {
    for (const int n_tokens : {10, 15, 16, 17, 31, 32, 33, 48}) {
      const uint64_t rows = std::vector<uint64_t>{1, 15, 16, 17, 33, 64, 95}[rng() % 7];
      const uint64_t cols = 256 * (1 + rng() % 5);
      SCOPED_TRACE(::testing::Message() << DTypeName(type) << " " << rows << "x" << cols << " batch " << n_tokens);
      std::vector<float> values(rows * cols);
      for (uint64_t r = 0; r < rows; ++r) {
        const float scale = std::exp(normal(rng)) * 0.05f;
        for (uint64_t c = 0; c < cols; ++c) values[r * cols + c] = static_cast<float>(static_cast<int>(rng() % 3) - 1) * scale;
      }
      std::vector<uint8_t> bytes(TensorBytes(type, cols, rows * cols).value());
      ASSERT_TRUE(ref::QuantizeTensor(type, values, cols, bytes).ok());
      auto packed = PackWeight(type, cols, rows, bytes);
      ASSERT_TRUE(packed.ok()) << packed.status();
      const std::vector<float> x = testing::RandomActivations(n_tokens, cols, rng);
      std::vector<float> absmax(n_tokens);
      ref::ComputeAbsMaxRef(x.data(), n_tokens, cols, absmax.data());
      std::vector<int8_t> q(static_cast<size_t>(n_tokens) * cols);
      ref::QuantizeActivationsRef(x.data(), n_tokens, cols, absmax.data(), q.data());
      const size_t n_out = static_cast<size_t>(n_tokens) * rows;
      std::vector<double> want(n_out), mag(n_out);
      ASSERT_TRUE(ref::MatMulDequantRef(type, cols, rows, bytes, x.data(), n_tokens, absmax.data(), want, mag).ok());
      for (const cpu::CpuKernels* k : variants) {
        SCOPED_TRACE(k->name);
        QuantizedActivations act;
        cpu::QuantizeActivationsWith(*k, x.data(), n_tokens, cols, ActScaling::kPerToken, absmax.data(), &act, nullptr);
        GuardedFloats out(n_out);
        cpu::MatMulQuantizedWith(*k, **packed, act, out.data(), pool2);
        ASSERT_TRUE(out.Intact() && out.Written());
        for (size_t i = 0; i < n_out; ++i) {
          ASSERT_NEAR(out.data()[i], want[i], kAccumRel * mag[i] + 1e-30) << "token " << i / rows << " row " << i % rows;
        }
        // These rows have one scale each: the VNNI kernels sum codes × activations over the whole
        // row in integers and scale once, alone or in a batch (panels included), so each token's
        // batched result equals its result alone, bit for bit.
        if (k->variant != cpu::CpuVariant::kAvx512Vnni) continue;
        for (int t = 0; t < n_tokens; ++t) {
          QuantizedActivations one;
          cpu::QuantizeActivationsWith(*k, x.data() + t * cols, 1, cols, ActScaling::kPerToken, absmax.data() + t, &one,
                                       nullptr);
          std::vector<float> alone(rows);
          cpu::MatMulQuantizedWith(*k, **packed, one, alone.data(), pool2);
          for (uint64_t r = 0; r < rows; ++r) {
            ASSERT_EQ(out.data()[t * rows + r], alone[r]) << "token " << t << " row " << r << " alone";
          }
        }
      }
    }
  }
}

// The AVX-512 Q4 / Q8 batch kernels work in panels of 16 rows × 1024 columns from 5 tokens on
// (kernels/cpu/avx512_panel_matmul.cc). Row counts around the 16-row panels, columns spanning one
// panel or several (with a partial last one), batches around the 8-token register tile and the
// 5-token switch: every variant equals the per-block integer reference within the accumulation
// budget, and a row's result does not depend on how the rows were split over threads.
TEST(MatMulQuantized, Q4Q8BatchesAroundPanelEdges) {
  std::mt19937_64 rng(1024);
  ThreadPool pool1(1);
  ThreadPool pool3(3);
  const auto variants = testing::VariantsToTest();
  for (const DType type : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    for (const int n_tokens : {4, 5, 7, 8, 9, 16, 17}) {
      const uint64_t rows = std::vector<uint64_t>{1, 15, 16, 17, 33, 47}[rng() % 6];
      const uint64_t cols = std::vector<uint64_t>{64, 576, 1024, 1088, 2112}[rng() % 5];
      SCOPED_TRACE(::testing::Message() << DTypeName(type) << " " << rows << "x" << cols << " batch " << n_tokens);
      const std::vector<uint8_t> bytes = testing::RandomTensor(type, cols, rows, rng);
      auto packed = PackWeight(type, cols, rows, bytes);
      ASSERT_TRUE(packed.ok()) << packed.status();
      const std::vector<float> x = testing::RandomActivations(n_tokens, cols, rng);
      std::vector<int8_t> q(x.size());
      std::vector<float> steps(n_tokens * ref::ActBlocks(cols));
      ref::QuantizeActivationBlocksRef(x.data(), n_tokens, cols, q.data(), steps.data());
      const size_t n_out = static_cast<size_t>(n_tokens) * rows;
      std::vector<double> want(n_out), mag(n_out), exact(n_out);
      ASSERT_TRUE(ref::MatMulDequantBlocksRef(type, cols, rows, bytes, x.data(), n_tokens, exact, mag).ok());
      ASSERT_TRUE(ref::MatMulInt8BlocksRef(type, cols, rows, bytes, q.data(), steps.data(), n_tokens, want).ok());
      for (const cpu::CpuKernels* k : variants) {
        SCOPED_TRACE(k->name);
        QuantizedActivations act;
        cpu::QuantizeActivationsWith(*k, x.data(), n_tokens, cols, ActScaling::kPerBlock, nullptr, &act, nullptr);
        GuardedFloats one_thread(n_out), three_threads(n_out);
        cpu::MatMulQuantizedWith(*k, **packed, act, one_thread.data(), pool1);
        cpu::MatMulQuantizedWith(*k, **packed, act, three_threads.data(), pool3);
        ASSERT_TRUE(one_thread.Intact() && one_thread.Written());
        ASSERT_TRUE(three_threads.Intact() && three_threads.Written());
        for (size_t i = 0; i < n_out; ++i) {
          ASSERT_NEAR(one_thread.data()[i], want[i], kAccumRel * mag[i] + 1e-30)
              << "token " << i / rows << " row " << i % rows;
          ASSERT_EQ(one_thread.data()[i], three_threads.data()[i]) << "token " << i / rows << " row " << i % rows;
        }
      }
    }
  }
}

// Token t of act: q equals the reference's codes (dense, `cols` per token) and zero past them,
// and the 32-block sums are the sums of q.
void ExpectCodesAndSums(const QuantizedActivations& act, int t, uint64_t cols, const std::vector<int8_t>& q_ref) {
  for (uint64_t c = 0; c < act.stride; ++c) {
    const int want = c < cols ? q_ref[t * cols + c] : 0;
    ASSERT_EQ(act.q[t * act.stride + c], want) << "token " << t << " col " << c;
  }
  for (uint64_t b = 0; b < act.stride / 32; ++b) {
    int32_t s = 0;
    for (uint64_t c = b * 32; c < b * 32 + 32; ++c) s += act.q[t * act.stride + c];
    ASSERT_EQ(act.sums[t * (act.stride / 32) + b], s);
  }
}

// Checks act's block steps (step(t, b) for blocks holding columns, zero past them) and
// scaled sums (float(sums) × step), exactly.
template <typename StepFn>
void ExpectStepsAndScaledSums(const QuantizedActivations& act, uint64_t cols, StepFn step) {
  const uint64_t n32 = act.stride / 32;
  for (int t = 0; t < act.n_tokens; ++t) {
    for (uint64_t b = 0; b < n32; ++b) {
      const float want = b * 32 < cols ? step(t, b) : 0.0f;
      const size_t i = t * n32 + b;
      ASSERT_EQ(act.block_steps[i], want) << "token " << t << " block " << b;
      // An infinite step (a block holding ±inf) has q = 0 and a NaN scaled sum, 0 × inf.
      const float scaled = static_cast<float>(act.sums[i]) * want;
      ASSERT_TRUE(act.scaled_sums[i] == scaled || (std::isnan(scaled) && std::isnan(act.scaled_sums[i])))
          << "token " << t << " block " << b << ": " << act.scaled_sums[i] << " vs " << scaled;
    }
  }
}

// Per-block quantization: q and the steps as the reference, the row's absmax recorded.
TEST(QuantizeActivations, PerBlockMatchesReferenceExactly) {
  std::mt19937_64 rng(43);
  for (int iter = 0; iter < 60; ++iter) {
    const int n_tokens = 1 + static_cast<int>(rng() % 9);
    const uint64_t cols = 1 + rng() % 3000;
    std::vector<float> x = testing::RandomActivations(n_tokens, cols, rng);
    if (iter % 10 == 3) {  // blocks with an infinity: step inf, every q 0
      x[0] = -INFINITY;
      x[x.size() - 1] = INFINITY;
    }
    if (iter % 10 == 5) std::fill(x.begin(), x.begin() + std::min<size_t>(x.size(), 40), 0.0f);  // zero blocks
    std::vector<int8_t> q_ref(x.size());
    std::vector<float> steps_ref(n_tokens * ref::ActBlocks(cols));
    ref::QuantizeActivationBlocksRef(x.data(), n_tokens, cols, q_ref.data(), steps_ref.data());
    std::vector<float> row_absmax(n_tokens);
    ref::ComputeAbsMaxRef(x.data(), n_tokens, cols, row_absmax.data());
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " iter " << iter << " cols " << cols);
      QuantizedActivations act;
      cpu::QuantizeActivationsWith(*k, x.data(), n_tokens, cols, ActScaling::kPerBlock, nullptr, &act, nullptr);
      ASSERT_EQ(act.scaling, ActScaling::kPerBlock);
      for (int t = 0; t < n_tokens; ++t) {
        ASSERT_EQ(act.absmax[t], row_absmax[t]);
        ExpectCodesAndSums(act, t, cols, q_ref);
      }
      ExpectStepsAndScaledSums(act, cols, [&](int t, uint64_t b) { return steps_ref[t * ref::ActBlocks(cols) + b]; });
    }
  }
}

// A ternary weight against per-block activations is a programming error: NaN, not garbage.
TEST(MatMulQuantized, TernaryRejectsPerBlockActivations) {
  std::mt19937_64 rng(5);
  const uint64_t cols = 512;
  const uint64_t rows = 9;
  auto packed = PackWeight(DType::kTQ2_0, cols, rows, testing::RandomTensor(DType::kTQ2_0, cols, rows, rng));
  ASSERT_TRUE(packed.ok()) << packed.status();
  const std::vector<float> x = testing::RandomActivations(2, cols, rng);
  ThreadPool pool(1);
  for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
    QuantizedActivations act;
    cpu::QuantizeActivationsWith(*k, x.data(), 2, cols, ActScaling::kPerBlock, nullptr, &act, nullptr);
    std::vector<float> out(2 * rows, 0.0f);
    cpu::MatMulQuantizedWith(*k, **packed, act, out.data(), pool);
    for (float v : out) ASSERT_TRUE(std::isnan(v)) << k->name;
  }
}

TEST(QuantizeActivations, AllVariantsMatchReferenceExactly) {
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 60; ++iter) {
    const int n_tokens = 1 + static_cast<int>(rng() % 9);
    const uint64_t cols = 1 + rng() % 3000;  // any length, tails included
    std::vector<float> x = testing::RandomActivations(n_tokens, cols, rng);
    if (iter % 10 == 3) {  // non-finite inputs: NaN -> 0, ±inf -> ±127 (or 0 with absmax 0/inf)
      x[0] = NAN;
      x[x.size() - 1] = INFINITY;
      x[x.size() / 2] = -INFINITY;
    }
    std::vector<float> absmax(n_tokens);
    ref::ComputeAbsMaxRef(x.data(), n_tokens, cols, absmax.data());
    if (iter % 10 == 3) absmax[0] = 3.0f;  // a finite scale for token 0 despite the infinities
    std::vector<int8_t> q_ref(x.size());
    ref::QuantizeActivationsRef(x.data(), n_tokens, cols, absmax.data(), q_ref.data());
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " iter " << iter << " cols " << cols);
      std::vector<float> got_absmax(n_tokens);
      cpu::ComputeAbsMaxWith(*k, x.data(), n_tokens, cols, got_absmax.data());
      if (iter % 10 != 3) {
        for (int t = 0; t < n_tokens; ++t) ASSERT_EQ(got_absmax[t], absmax[t]);
      }
      QuantizedActivations act;
      cpu::QuantizeActivationsWith(*k, x.data(), n_tokens, cols, ActScaling::kPerToken, absmax.data(), &act, nullptr);
      ASSERT_EQ(act.stride, QuantizedActivations::StrideFor(cols));
      ASSERT_EQ(act.stride % 256, 0u);
      ExpectStepsAndScaledSums(act, cols, [&](int t, uint64_t) { return ref::ActivationScale(absmax[t]); });
      for (int t = 0; t < n_tokens; ++t) {
        ASSERT_EQ(act.absmax[t], absmax[t]);
        ExpectCodesAndSums(act, t, cols, q_ref);
        for (uint64_t b = 0; b < act.stride / 256; ++b) {
          float s = 0;
          for (int i = 0; i < 8; ++i) s += static_cast<float>(act.sums[t * (act.stride / 32) + b * 8 + i]);
          ASSERT_EQ(act.sums256[t * (act.stride / 256) + b], s);
        }
      }
    }
  }
}

// Quantizing with the tokens split over a pool must give, byte for byte, what one thread gives:
// q, sums, sums256, steps and scaled sums and, where the variant makes it, the AMX tile copy
// with its block sums and steps, at either scaling.
TEST(QuantizeActivations, PooledEqualsOneThread) {
  std::mt19937_64 rng(7);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  for (int iter = 0; iter < 30; ++iter) {
    ThreadPool& pool = iter % 2 ? pool3 : pool2;
    const int n_tokens = 1 + static_cast<int>(rng() % 70);  // below and above kMinParallelRowTokens
    const uint64_t cols = 1 + rng() % 2100;
    const std::vector<float> x = testing::RandomActivations(n_tokens, cols, rng);
    std::vector<float> absmax(n_tokens);
    ref::ComputeAbsMaxRef(x.data(), n_tokens, cols, absmax.data());
    const ActScaling scaling = iter % 3 ? ActScaling::kPerBlock : ActScaling::kPerToken;
    for (const cpu::CpuKernels* k : testing::VariantsToTest()) {
      SCOPED_TRACE(::testing::Message() << k->name << " iter " << iter << " tokens " << n_tokens << " cols " << cols);
      QuantizedActivations one, pooled;
      cpu::QuantizeActivationsWith(*k, x.data(), n_tokens, cols, scaling, absmax.data(), &one, nullptr);
      cpu::QuantizeActivationsWith(*k, x.data(), n_tokens, cols, scaling, absmax.data(), &pooled, &pool);
      ASSERT_EQ(pooled.tiled, one.tiled);
      const uint64_t stride = one.stride;
      ASSERT_EQ(pooled.stride, stride);
      ASSERT_EQ(std::memcmp(pooled.q.get(), one.q.get(), n_tokens * stride), 0);
      ASSERT_EQ(std::memcmp(pooled.absmax.get(), one.absmax.get(), n_tokens * sizeof(float)), 0);
      ASSERT_EQ(std::memcmp(pooled.sums.get(), one.sums.get(), n_tokens * (stride / 32) * sizeof(int32_t)), 0);
      ASSERT_EQ(std::memcmp(pooled.sums256.get(), one.sums256.get(), n_tokens * (stride / 256) * sizeof(float)), 0);
      ASSERT_EQ(std::memcmp(pooled.block_steps.get(), one.block_steps.get(), n_tokens * (stride / 32) * 4), 0);
      ASSERT_EQ(std::memcmp(pooled.scaled_sums.get(), one.scaled_sums.get(), n_tokens * (stride / 32) * 4), 0);
      if (one.tiled) {
        const uint64_t tile_tokens = (n_tokens + cpu::kAmxTileTokens - 1) / cpu::kAmxTileTokens * cpu::kAmxTileTokens;
        ASSERT_EQ(std::memcmp(pooled.tiles.get(), one.tiles.get(), tile_tokens * stride), 0);
        ASSERT_EQ(std::memcmp(pooled.tile_sums.get(), one.tile_sums.get(), tile_tokens * (stride / 32) * 4), 0);
        ASSERT_EQ(std::memcmp(pooled.token_sums.get(), one.token_sums.get(), tile_tokens * 4), 0);
        ASSERT_EQ(std::memcmp(pooled.tile_steps.get(), one.tile_steps.get(), tile_tokens * (stride / 32) * 4), 0);
      }
    }
  }
}

}  // namespace
}  // namespace bitfleet::kernels

// The CUDA matmuls and activation quantization against the CPU references of
// kernels/ref/matmul_ref.h, on random shapes (odd row counts, every column multiple the type
// allows, batches on both sides of the mat-vec / tensor-core switch, absmax inflated as after a
// tensor-parallel all-reduce) with sentinel-guarded outputs. Q4_0 / Q4_1 / Q8_0 run every shape
// with per-block activations (their ActScalingFor) and with per-token ones (their kernels take
// either); ternary types per token. Budgets: docs/cuda.md (the CPU kernels' budgets).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_matmul.h"
#include "kernels/cuda/cuda_weight.h"
#include "kernels/matmul.h"
#include "kernels/ref/matmul_ref.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace bitfleet::kernels::cuda {
namespace {

using gputest::DeviceArray;
using gputest::GuardedDeviceFloats;

constexpr double kAccumRel = 1e-5;  // float accumulation, relative to M = sum |w x|
constexpr int kShapesPerType = 40;
constexpr uint64_t kMaxWork = 20'000'000;  // rows × cols × tokens per shape (the double reference)

struct Shape {
  uint64_t rows;
  uint64_t cols;
  int n_tokens;
};

Shape RandomShape(DType type, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pct(0, 99);
  const uint64_t mult = kernels::testing::ColsMultiple(type);
  Shape s;
  const int p = pct(rng);
  s.n_tokens = p < 30 ? 1 : p < 50 ? 2 + pct(rng) % 3 : 5 + pct(rng) % 76;  // mat-vec and mma paths
  s.cols = mult == 1 ? 1 + std::uniform_int_distribution<uint64_t>(0, 3000)(rng)
                     : mult * std::uniform_int_distribution<uint64_t>(1, std::max<uint64_t>(1, 7000 / mult))(rng);
  s.rows = 1 + std::uniform_int_distribution<uint64_t>(0, 400)(rng);
  if (pct(rng) < 50) s.rows |= 1;
  while (s.rows * s.cols * s.n_tokens > kMaxWork) {
    if (s.rows > 16) {
      s.rows = s.rows / 2 + 1;
    } else {
      s.n_tokens = std::max(1, s.n_tokens / 2);
    }
  }
  return s;
}

// Per-32 block sums of q (dense n_tokens × stride), as the GPU quantizer writes them.
std::vector<int32_t> BlockSums(const std::vector<int8_t>& q, int n_tokens, int64_t stride) {
  std::vector<int32_t> sums(static_cast<size_t>(n_tokens) * (stride / 32), 0);
  for (int t = 0; t < n_tokens; ++t) {
    for (int64_t c = 0; c < stride; ++c) sums[t * (stride / 32) + c / 32] += q[t * stride + c];
  }
  return sums;
}

// Dense rows (n_tokens × width) copied into rows `stride` apart, zero past width.
template <typename T>
std::vector<T> Padded(const std::vector<T>& dense, int n_tokens, int64_t width, int64_t stride) {
  std::vector<T> out(static_cast<size_t>(n_tokens) * stride, T(0));
  for (int t = 0; t < n_tokens; ++t) std::copy_n(dense.begin() + t * width, width, out.begin() + t * stride);
  return out;
}

// The block steps the per-token quantizer writes: absmax / 127 in every block holding a column.
std::vector<float> TokenSteps(const std::vector<float>& absmax, int64_t cols, int64_t stride) {
  const int64_t n32 = stride / 32;
  std::vector<float> steps(absmax.size() * n32, 0.0f);
  for (size_t t = 0; t < absmax.size(); ++t) {
    std::fill_n(steps.begin() + t * n32, ref::ActBlocks(cols), ref::ActivationScale(absmax[t]));
  }
  return steps;
}

// Bit-for-bit equality of float arrays (steps may be +inf; memcmp needs no NaN care).
void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
        << what << " " << i << ": got " << got[i] << " want " << want[i];
  }
}

void CheckAgainst(const char* what, const std::vector<float>& got, const std::vector<double>& ref,
                  const std::vector<double>& magnitude, const Shape& s, double* worst) {
  for (size_t i = 0; i < ref.size(); ++i) {
    const double budget = kAccumRel * magnitude[i] + 1e-30;
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    ASSERT_LE(err, budget) << what << " output " << i << " (token " << i / s.rows << ", row " << i % s.rows << ") of "
                           << s.rows << "x" << s.cols << " batch " << s.n_tokens << ": got " << got[i] << " want "
                           << ref[i];
    *worst = std::max(*worst, err / budget);
  }
}

// One quantized shape through quantization at `scaling`, the mat-vec (small batches), the
// tensor-core kernel and MatMulCuda, against the integer reference; updates the worst error /
// budget ratios.
void CheckQuantShapeAt(DType type, ActScaling scaling, const Shape& s, std::mt19937_64& rng, double* worst_vec_out,
                       double* worst_mma_out) {
  double& worst_vec = *worst_vec_out;
  double& worst_mma = *worst_mma_out;
  const bool per_block = scaling == ActScaling::kPerBlock;
  SCOPED_TRACE(::testing::Message() << DTypeName(type) << " " << s.rows << "x" << s.cols << " batch " << s.n_tokens
                                    << (per_block ? " per-block" : " per-token") << " activations");
  const std::vector<uint8_t> bytes = kernels::testing::RandomTensor(type, s.cols, s.rows, rng);
  const std::vector<float> x = kernels::testing::RandomActivations(s.n_tokens, s.cols, rng);
  std::vector<float> absmax(s.n_tokens);
  ref::ComputeAbsMaxRef(x.data(), s.n_tokens, s.cols, absmax.data());
  if (!per_block) {
    for (float& a : absmax) {
      if (rng() % 4 == 0) a *= 1.5f;  // as after an all-reduce-max across ranks
    }
  }

  // Activation quantization: bit-exact q, absmax, block sums and block steps.
  const int64_t cols = static_cast<int64_t>(s.cols);
  const int64_t stride = ActivationStride(cols);
  const int64_t n32 = stride / 32;
  DeviceArray<float> x_dev(x);
  DeviceArray<float> absmax_dev(absmax);
  DeviceArray<int8_t> q_dev(static_cast<size_t>(s.n_tokens) * stride);
  DeviceArray<float> absmax_out(s.n_tokens);
  DeviceArray<int32_t> sums_dev(static_cast<size_t>(s.n_tokens) * n32);
  DeviceArray<float> steps_dev(static_cast<size_t>(s.n_tokens) * n32);
  std::vector<int8_t> q_dense(static_cast<size_t>(s.n_tokens) * s.cols);
  std::vector<float> steps_want;
  std::vector<float> block_steps;  // per block: dense n_tokens × ActBlocks(cols), for the references
  if (per_block) {
    BF_ASSERT_LAUNCH(LaunchQuantizeActivationBlocks(x_dev.get(), s.n_tokens, cols, stride, q_dev.get(),
                                                    absmax_out.get(), sums_dev.get(), steps_dev.get(), nullptr));
    const int64_t used32 = static_cast<int64_t>(ref::ActBlocks(s.cols));
    block_steps.resize(static_cast<size_t>(s.n_tokens) * used32);
    ref::QuantizeActivationBlocksRef(x.data(), s.n_tokens, s.cols, q_dense.data(), block_steps.data());
    steps_want = Padded(block_steps, s.n_tokens, used32, n32);
  } else {
    BF_ASSERT_LAUNCH(LaunchQuantizeActivations(x_dev.get(), s.n_tokens, cols, absmax_dev.get(), stride, q_dev.get(),
                                               absmax_out.get(), sums_dev.get(), steps_dev.get(), nullptr));
    ref::QuantizeActivationsRef(x.data(), s.n_tokens, s.cols, absmax.data(), q_dense.data());
    steps_want = TokenSteps(absmax, cols, stride);
  }
  const std::vector<int8_t> q_want = Padded(q_dense, s.n_tokens, cols, stride);
  ASSERT_EQ(q_dev.ToHost(), q_want);
  ExpectSameBits(absmax_out.ToHost(), absmax, "absmax");  // per block: the row's max
  ASSERT_EQ(sums_dev.ToHost(), BlockSums(q_want, s.n_tokens, stride));
  ExpectSameBits(steps_dev.ToHost(), steps_want, "block step");
  if (::testing::Test::HasFatalFailure()) return;

  // References: the exact integer path, and the magnitudes from the dequantizing one.
  const size_t n_out = static_cast<size_t>(s.n_tokens) * s.rows;
  std::vector<double> ref_out(n_out), ref_deq(n_out), magnitude(n_out);
  if (per_block) {
    ASSERT_TRUE(
        ref::MatMulInt8BlocksRef(type, s.cols, s.rows, bytes, q_dense.data(), block_steps.data(), s.n_tokens, ref_out)
            .ok());
    ASSERT_TRUE(
        ref::MatMulDequantBlocksRef(type, s.cols, s.rows, bytes, x.data(), s.n_tokens, ref_deq, magnitude).ok());
  } else {
    ASSERT_TRUE(
        ref::MatMulInt8Ref(type, s.cols, s.rows, bytes, q_dense.data(), absmax.data(), s.n_tokens, ref_out).ok());
    ASSERT_TRUE(ref::MatMulDequantRef(type, s.cols, s.rows, bytes, x.data(), s.n_tokens, absmax.data(), ref_deq,
                                      magnitude)
                    .ok());
  }

  StatusOr<std::unique_ptr<CudaWeight>> w = CudaWeight::Create(type, s.cols, s.rows, bytes);
  ASSERT_TRUE(w.ok()) << w.status();
  ActivationView view;
  view.q = q_dev.get();
  view.absmax = absmax_out.get();
  view.sums = sums_dev.get();
  view.block_steps = steps_dev.get();
  view.cols = cols;
  view.stride = stride;
  view.n_tokens = s.n_tokens;
  view.per_block = per_block;

  GuardedDeviceFloats out(n_out);
  std::string error;
  if (s.n_tokens <= kMatVecMaxTokens) {
    BF_ASSERT_LAUNCH(LaunchQuantMatVec((*w)->quant_view(), view, out.data(), nullptr));
    const std::vector<float> got = out.Check(&error);
    ASSERT_EQ(error, "") << "mat-vec";
    CheckAgainst("mat-vec", got, ref_out, magnitude, s, &worst_vec);
    out.Reset();
  }
  BF_ASSERT_LAUNCH(LaunchQuantMatMulMma((*w)->quant_view(), view, out.data(), nullptr));
  const std::vector<float> got = out.Check(&error);
  ASSERT_EQ(error, "") << "mma";
  CheckAgainst("mma", got, ref_out, magnitude, s, &worst_mma);

  // The Status-level entry point from float activations (own absmax, the type's scaling,
  // dispatching by batch). Per block nothing differs from the quantization above, so the
  // result is checked too; per token the absmax above may have been inflated.
  StatusOr<std::unique_ptr<CudaActivations>> scratch = CudaActivations::Create(s.n_tokens, s.cols);
  ASSERT_TRUE(scratch.ok()) << scratch.status();
  out.Reset();
  ASSERT_TRUE(MatMulCuda(**w, x_dev.get(), s.n_tokens, out.data(), scratch->get(), nullptr).ok());
  BF_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got_cuda = out.Check(&error);
  ASSERT_EQ(error, "") << "MatMulCuda";
  if (per_block) {
    double worst = 0.0;
    CheckAgainst("MatMulCuda", got_cuda, ref_out, magnitude, s, &worst);
  }
}

// The shape at every scaling the type's kernels take: ternary per token; Q4/Q8 per block (their
// ActScalingFor) and per token.
void CheckQuantShape(DType type, const Shape& s, std::mt19937_64& rng, double* worst_vec, double* worst_mma) {
  if (ActScalingFor(type) == ActScaling::kPerBlock) {
    CheckQuantShapeAt(type, ActScaling::kPerBlock, s, rng, worst_vec, worst_mma);
    if (::testing::Test::HasFatalFailure()) return;
  }
  CheckQuantShapeAt(type, ActScaling::kPerToken, s, rng, worst_vec, worst_mma);
}

class QuantMatMulCudaTest : public ::testing::TestWithParam<DType> {};

TEST_P(QuantMatMulCudaTest, MatchesIntegerReferenceOnRandomShapes) {
  BF_REQUIRE_GPU();
  const DType type = GetParam();
  std::mt19937_64 rng(0xC0DA + static_cast<int>(type));
  double worst_vec = 0.0;
  double worst_mma = 0.0;
  for (int iter = 0; iter < kShapesPerType; ++iter) {
    CheckQuantShape(type, RandomShape(type, rng), rng, &worst_vec, &worst_mma);
    if (HasFatalFailure()) return;
  }
  std::printf("[gpu] %s worst error / budget: mat-vec %.3f, mma %.3f\n", DTypeName(type), worst_vec, worst_mma);
}

// `n` columns rounded down to what `type` allows (at least one block).
uint64_t ColsFor(DType type, uint64_t n) {
  const uint64_t mult = kernels::testing::ColsMultiple(type);
  return std::max<uint64_t>(mult, n / mult * mult);
}

// CheckQuantShape over fixed shapes; prints the worst error / budget ratios under `label`.
void CheckShapes(DType type, const std::vector<Shape>& shapes, std::mt19937_64& rng, const char* label) {
  double worst_vec = 0.0;
  double worst_mma = 0.0;
  for (const Shape& s : shapes) {
    CheckQuantShape(type, s, rng, &worst_vec, &worst_mma);
    if (::testing::Test::HasFatalFailure()) return;
  }
  std::printf("[gpu] %s %s worst error / budget: mat-vec %.3f, mma %.3f\n", DTypeName(type), label, worst_vec,
              worst_mma);
}

// The tensor-core kernel's tiles (64 rows × 32 tokens, the steps split 4 ways by stages of 4
// steps): row counts off the block tile (one group, a partial last block, several blocks),
// batches with partial and several token tiles, one step, a partial last stage and many stages.
// Columns 32..256 are one step of Q8 (64), Q4 (128) or ternary (256); 1283 and 2560 give
// several stages, partial or not.
TEST_P(QuantMatMulCudaTest, TensorCoreTileEdges) {
  BF_REQUIRE_GPU();
  const DType type = GetParam();
  std::mt19937_64 rng(0x7113 + static_cast<int>(type));
  const auto cols = [type](uint64_t n) { return ColsFor(type, n); };
  CheckShapes(type,
              {{3, cols(32), 5}, {64, cols(64), 32}, {65, cols(2560), 33}, {129, cols(1283), 100},
               {200, cols(2560), 9}, {1, cols(2560), 64}, {327, cols(128), 71}, {640, cols(2560), 12},
               {63, cols(1283), 96}, {136, cols(256), 40}, {72, cols(64), 8}, {9, cols(128), 31}},
              rng, "tile edges");
}

// The mat-vec grid is one wave of blocks (about 9-12 per multiprocessor), each walking row
// groups blockIdx.x, + gridDim.x, ... with the next chunk's codes loaded ahead: tall matrices make
// every block walk several groups (the random shapes stay within one group per block).
TEST_P(QuantMatMulCudaTest, MatVecWalksSeveralRowGroupsPerBlock) {
  BF_REQUIRE_GPU();
  const DType type = GetParam();
  std::mt19937_64 rng(0x3A7C + static_cast<int>(type));
  const auto cols = [type](uint64_t n) { return ColsFor(type, n); };
  CheckShapes(type,
              {{20001, cols(256), 1}, {12289, cols(1283), 4}, {16003, cols(520), 2}, {9999, cols(7000), 1},
               {30000, cols(64), 3}},
              rng, "tall matrices");
}

// A chain of mat-vecs in one cooperative launch gives every link's output bit for bit as the
// single mat-vec does: links of mixed heights (fewer row groups than the grid has blocks, and
// several per block) and two column counts, each with its own activations (at the type's
// ActScalingFor: per block for Q4/Q8) and output.
TEST_P(QuantMatMulCudaTest, MatVecChainMatchesSingleMatVecsBitForBit) {
  BF_REQUIRE_GPU();
  const DType type = GetParam();
  std::mt19937_64 rng(0xC4A1 + static_cast<int>(type));
  const auto cols = [type](uint64_t n) { return ColsFor(type, n); };
  const std::vector<std::pair<uint64_t, uint64_t>> shapes = {
      {640, cols(2560)}, {2560, cols(2560)}, {13, cols(2560)}, {12000, cols(520)}, {2560, cols(6912)}, {1, cols(64)}};
  std::vector<std::unique_ptr<CudaWeight>> weights;
  std::vector<std::unique_ptr<CudaActivations>> acts;
  // Device buffers are neither copyable nor movable: held by pointer.
  std::vector<std::unique_ptr<DeviceArray<float>>> inputs;
  std::vector<std::unique_ptr<GuardedDeviceFloats>> single, chained;
  std::vector<MatVecChainLink> links;
  for (const auto& [rows, n_cols] : shapes) {
    const std::vector<uint8_t> bytes = kernels::testing::RandomTensor(type, n_cols, rows, rng);
    StatusOr<std::unique_ptr<CudaWeight>> w = CudaWeight::Create(type, n_cols, rows, bytes);
    ASSERT_TRUE(w.ok()) << w.status();
    inputs.push_back(std::make_unique<DeviceArray<float>>(kernels::testing::RandomActivations(1, n_cols, rng)));
    StatusOr<std::unique_ptr<CudaActivations>> a = CudaActivations::Create(1, n_cols);
    ASSERT_TRUE(a.ok()) << a.status();
    StatusOr<ActivationView> view =
        QuantizeActivationsCuda(inputs.back()->get(), 1, n_cols, ActScalingFor(type), nullptr, **a, nullptr);
    ASSERT_TRUE(view.ok()) << view.status();
    single.push_back(std::make_unique<GuardedDeviceFloats>(rows));
    chained.push_back(std::make_unique<GuardedDeviceFloats>(rows));
    BF_ASSERT_LAUNCH(LaunchQuantMatVec((*w)->quant_view(), *view, single.back()->data(), nullptr));
    links.push_back({(*w)->quant_view(), *view, nullptr});
    weights.push_back(std::move(*w));
    acts.push_back(std::move(*a));
  }
  for (size_t i = 0; i < links.size(); ++i) {
    links[i].out = chained[i]->data();
    ASSERT_TRUE(QuantMatVecLinkValid(links[i], links[i].w.format));
  }
  DeviceArray<MatVecChainLink> links_dev(links);
  BF_ASSERT_LAUNCH(LaunchQuantMatVecChain(links[0].w.format, links_dev.get(), static_cast<int>(links.size()), nullptr));
  for (size_t i = 0; i < links.size(); ++i) {
    std::string error;
    const std::vector<float> want = single[i]->Check(&error);
    ASSERT_EQ(error, "") << "single " << i;
    const std::vector<float> got = chained[i]->Check(&error);
    ASSERT_EQ(error, "") << "chain link " << i;
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float))) << "chain link " << i;
  }
}

// The single-token kernels (QuantMatVecOptions::kernel) give the general kernel's outputs bit
// for bit: they take the same integer step products and sum them in the same order. Shapes:
// one row, partial row groups, an odd number of groups (the tensor-core kernel's tiles are two
// groups), fewer steps than warps, step counts that end mid-chunk for each kernel's chunking,
// and tall matrices where every block walks several tiles.
TEST_P(QuantMatMulCudaTest, SingleTokenKernelsMatchTheGeneralKernelBitForBit) {
  BF_REQUIRE_GPU();
  const DType type = GetParam();
  std::mt19937_64 rng(0x1EA4 + static_cast<int>(type));
  const auto cols = [type](uint64_t n) { return ColsFor(type, n); };
  const std::vector<std::pair<uint64_t, uint64_t>> shapes = {
      {1, cols(256)},     {7, cols(512)},      {9, cols(2560)},     {17, cols(768)},    {24, cols(64)},
      {2560, cols(2560)}, {640, cols(6912)},   {2560, cols(4352)},  {12289, cols(1283)}, {20001, cols(520)},
      {333, cols(2304)},  {16, cols(8192)}};
  const QuantMatVecOptions saved = GetQuantMatVecOptions();
  for (const auto& [rows, n_cols] : shapes) {
    const std::vector<uint8_t> bytes = kernels::testing::RandomTensor(type, n_cols, rows, rng);
    StatusOr<std::unique_ptr<CudaWeight>> w = CudaWeight::Create(type, n_cols, rows, bytes);
    ASSERT_TRUE(w.ok()) << w.status();
    DeviceArray<float> input(kernels::testing::RandomActivations(1, n_cols, rng));
    StatusOr<std::unique_ptr<CudaActivations>> a = CudaActivations::Create(1, n_cols);
    ASSERT_TRUE(a.ok()) << a.status();
    StatusOr<ActivationView> view =
        QuantizeActivationsCuda(input.get(), 1, n_cols, ActScalingFor(type), nullptr, **a, nullptr);
    ASSERT_TRUE(view.ok()) << view.status();
    std::vector<float> want;
    for (MatVecKernel kernel : {MatVecKernel::kGeneral, MatVecKernel::kLean, MatVecKernel::kTensorCore}) {
      QuantMatVecOptions options = saved;
      options.kernel = kernel;
      SetQuantMatVecOptions(options);
      GuardedDeviceFloats out(rows);
      const cudaError_t launched = LaunchQuantMatVec((*w)->quant_view(), *view, out.data(), nullptr);
      SetQuantMatVecOptions(saved);
      BF_ASSERT_LAUNCH(launched);
      std::string error;
      const std::vector<float> got = out.Check(&error);
      ASSERT_EQ(error, "") << "kernel " << static_cast<int>(kernel) << ", " << rows << "x" << n_cols;
      if (kernel == MatVecKernel::kGeneral) {
        want = got;
        continue;
      }
      ASSERT_EQ(got.size(), want.size());
      for (size_t r = 0; r < got.size(); ++r) {
        ASSERT_EQ(std::memcmp(&got[r], &want[r], sizeof(float)), 0)
            << "kernel " << static_cast<int>(kernel) << ", " << rows << "x" << n_cols << ", row " << r << ": "
            << got[r] << " vs " << want[r];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, QuantMatMulCudaTest,
                         ::testing::Values(DType::kTQ2_0, DType::kTQ1_0, DType::kI2_S, DType::kQ4_0, DType::kQ4_1,
                                           DType::kQ8_0),
                         [](const ::testing::TestParamInfo<DType>& info) { return std::string(DTypeName(info.param)); });

class FloatMatMulCudaTest : public ::testing::TestWithParam<DType> {};

TEST_P(FloatMatMulCudaTest, MatchesDoubleReferenceOnRandomShapes) {
  BF_REQUIRE_GPU();
  const DType type = GetParam();
  std::mt19937_64 rng(0xF10A7 + static_cast<int>(type));
  double worst = 0.0;
  // Fixed shapes for the tensor-core path first (F32 takes the mat-vec path at any batch):
  // rows off the 32-row warp tile, every split-K factor the launcher picks (1: >= 256 blocks of
  // 128 rows; 2; 4), columns not a multiple of 32 / 8 / 4 (partial last step, unaligned
  // activation rows), and partial token tiles (1, 2, 3 or 4 n-tiles in use).
  const std::vector<Shape> fixed = {
      {17001, 40, 37}, {8300, 72, 40}, {1001, 2056, 9}, {333, 1237, 70}, {129, 8, 5},
      {16, 2560, 32},  {4097, 520, 9}, {77, 3, 64},     {2049, 264, 23}, {31, 1000, 5},
  };
  const int n_fixed = type == DType::kF32 ? 0 : static_cast<int>(fixed.size());
  for (int iter = 0; iter < n_fixed + kShapesPerType; ++iter) {
    Shape s = iter < n_fixed ? fixed[iter] : RandomShape(type, rng);
    SCOPED_TRACE(::testing::Message() << DTypeName(type) << " " << s.rows << "x" << s.cols << " batch " << s.n_tokens);
    const std::vector<uint8_t> bytes = kernels::testing::RandomTensor(type, s.cols, s.rows, rng);
    const std::vector<float> x = kernels::testing::RandomActivations(s.n_tokens, s.cols, rng);
    const size_t n_out = static_cast<size_t>(s.n_tokens) * s.rows;
    std::vector<double> ref_out(n_out), magnitude(n_out);
    ASSERT_TRUE(
        ref::MatMulDequantRef(type, s.cols, s.rows, bytes, x.data(), s.n_tokens, nullptr, ref_out, magnitude).ok());
    StatusOr<std::unique_ptr<CudaWeight>> w = CudaWeight::Create(type, s.cols, s.rows, bytes);
    ASSERT_TRUE(w.ok()) << w.status();
    DeviceArray<float> x_dev(x);
    GuardedDeviceFloats out(n_out);
    ASSERT_TRUE(MatMulCuda(**w, x_dev.get(), s.n_tokens, out.data(), nullptr, nullptr).ok());
    BF_ASSERT_CUDA(cudaDeviceSynchronize());
    std::string error;
    const std::vector<float> got = out.Check(&error);
    ASSERT_EQ(error, "");
    CheckAgainst("float matmul", got, ref_out, magnitude, s, &worst);
  }
  std::printf("[gpu] %s worst error / budget: %.3f\n", DTypeName(type), worst);
}

INSTANTIATE_TEST_SUITE_P(Types, FloatMatMulCudaTest, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& info) { return std::string(DTypeName(info.param)); });

// Random activations with edge values: NaN, ±inf, repeated exact values, and whole 32-blocks
// that are zero, NaN, subnormal (127 / absmax overflows to inf) or hold one huge value.
std::vector<float> EdgeActivations(int n_tokens, int64_t cols, std::mt19937_64& rng) {
  std::vector<float> x = kernels::testing::RandomActivations(n_tokens, cols, rng);
  for (float& v : x) {
    const uint64_t r = rng() % 1000;
    if (r == 0) v = NAN;
    if (r == 1) v = INFINITY;
    if (r == 2) v = -INFINITY;
    if (r == 3) v = 0.5f;  // repeated exact values: equal codes across tokens
  }
  for (int64_t b0 = 0; b0 < static_cast<int64_t>(x.size()); b0 += 32) {
    // Blocks of the dense array: within a row they are the quantizer's blocks only when cols is
    // a multiple of 32, otherwise they straddle two; both are edge cases worth having.
    const int64_t b1 = std::min<int64_t>(b0 + 32, static_cast<int64_t>(x.size()));
    const uint64_t r = rng() % 40;
    for (int64_t i = b0; i < b1; ++i) {
      if (r == 0) x[i] = 0.0f;
      if (r == 1) x[i] = NAN;
      if (r == 2) x[i] = (i % 3 == 0 ? -1e-40f : 3e-41f);
      if (r == 3 && i == b0) x[i] = 3e38f;
    }
  }
  return x;
}

TEST(QuantizeActivationsCudaTest, BitExactOnEdgeValuesAndOwnAbsmax) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(77);
  for (int iter = 0; iter < 30; ++iter) {
    const int n_tokens = 1 + static_cast<int>(rng() % 9);
    const int64_t cols = 1 + static_cast<int64_t>(rng() % 3000);
    const std::vector<float> x = EdgeActivations(n_tokens, cols, rng);
    const int64_t stride = ActivationStride(cols);
    DeviceArray<float> x_dev(x);
    DeviceArray<int8_t> q_dev(static_cast<size_t>(n_tokens) * stride);
    DeviceArray<float> absmax_dev(n_tokens);
    DeviceArray<int32_t> sums_dev(static_cast<size_t>(n_tokens) * (stride / 32));
    DeviceArray<float> steps_dev(static_cast<size_t>(n_tokens) * (stride / 32));
    BF_ASSERT_LAUNCH(LaunchQuantizeActivations(x_dev.get(), n_tokens, cols, nullptr, stride, q_dev.get(),
                                               absmax_dev.get(), sums_dev.get(), steps_dev.get(), nullptr));
    std::vector<float> absmax(n_tokens);
    ref::ComputeAbsMaxRef(x.data(), n_tokens, cols, absmax.data());
    ExpectSameBits(absmax_dev.ToHost(), absmax, "absmax");
    std::vector<int8_t> q_dense(static_cast<size_t>(n_tokens) * cols);
    ref::QuantizeActivationsRef(x.data(), n_tokens, cols, absmax.data(), q_dense.data());
    const std::vector<int8_t> q_want = Padded(q_dense, n_tokens, cols, stride);
    ASSERT_EQ(q_dev.ToHost(), q_want) << "iteration " << iter;
    ASSERT_EQ(sums_dev.ToHost(), BlockSums(q_want, n_tokens, stride));
    ExpectSameBits(steps_dev.ToHost(), TokenSteps(absmax, cols, stride), "block step");
    if (HasFatalFailure()) return;
  }
}

// Per 32-block, bit for bit with ref::QuantizeActivationBlocksRef: q, block sums, steps (zero
// past cols) and the row's max.
TEST(QuantizeActivationsCudaTest, PerBlockBitExactOnEdgeValues) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(78);
  for (int iter = 0; iter < 40; ++iter) {
    const int n_tokens = 1 + static_cast<int>(rng() % 9);
    // Half the shapes on whole blocks (as Q4/Q8 weights have), half with a partial last block.
    const int64_t cols = iter % 2 == 0 ? 32 * (1 + static_cast<int64_t>(rng() % 100))
                                       : 1 + static_cast<int64_t>(rng() % 3000);
    SCOPED_TRACE(::testing::Message() << n_tokens << " x " << cols);
    const std::vector<float> x = EdgeActivations(n_tokens, cols, rng);
    const int64_t stride = ActivationStride(cols);
    const int64_t n32 = stride / 32;
    DeviceArray<float> x_dev(x);
    DeviceArray<int8_t> q_dev(static_cast<size_t>(n_tokens) * stride);
    DeviceArray<float> absmax_dev(n_tokens);
    DeviceArray<int32_t> sums_dev(static_cast<size_t>(n_tokens) * n32);
    DeviceArray<float> steps_dev(static_cast<size_t>(n_tokens) * n32);
    BF_ASSERT_LAUNCH(LaunchQuantizeActivationBlocks(x_dev.get(), n_tokens, cols, stride, q_dev.get(),
                                                    absmax_dev.get(), sums_dev.get(), steps_dev.get(), nullptr));
    const int64_t used32 = static_cast<int64_t>(ref::ActBlocks(static_cast<uint64_t>(cols)));
    std::vector<int8_t> q_dense(static_cast<size_t>(n_tokens) * cols);
    std::vector<float> steps(static_cast<size_t>(n_tokens) * used32);
    ref::QuantizeActivationBlocksRef(x.data(), n_tokens, cols, q_dense.data(), steps.data());
    const std::vector<int8_t> q_want = Padded(q_dense, n_tokens, cols, stride);
    ASSERT_EQ(q_dev.ToHost(), q_want) << "iteration " << iter;
    ASSERT_EQ(sums_dev.ToHost(), BlockSums(q_want, n_tokens, stride));
    ExpectSameBits(steps_dev.ToHost(), Padded(steps, n_tokens, used32, n32), "block step");
    std::vector<float> absmax(n_tokens);
    ref::ComputeAbsMaxRef(x.data(), n_tokens, cols, absmax.data());
    ExpectSameBits(absmax_dev.ToHost(), absmax, "row max");
    if (HasFatalFailure()) return;
  }
}

// Launch-time checks of the scalings the kernels take: ternary weights refuse per-block
// activations (and a view without absmax), Q4/Q8 weights a view without block steps; so does
// the mat-vec chain's link check.
TEST(QuantizeActivationsCudaTest, KernelsRefuseActivationsOfTheWrongScaling) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(79);
  const uint64_t cols = 256;
  const int n_tokens = 2;
  StatusOr<std::unique_ptr<CudaActivations>> acts = CudaActivations::Create(n_tokens, cols);
  ASSERT_TRUE(acts.ok()) << acts.status();
  DeviceArray<float> x_dev(kernels::testing::RandomActivations(n_tokens, cols, rng));
  DeviceArray<float> out(static_cast<size_t>(n_tokens) * 8);
  for (DType type : {DType::kTQ2_0, DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
    SCOPED_TRACE(DTypeName(type));
    StatusOr<std::unique_ptr<CudaWeight>> w =
        CudaWeight::Create(type, cols, 8, kernels::testing::RandomTensor(type, cols, 8, rng));
    ASSERT_TRUE(w.ok()) << w.status();
    const QuantWeightView& wv = (*w)->quant_view();
    StatusOr<ActivationView> per_block =
        QuantizeActivationsCuda(x_dev.get(), n_tokens, cols, ActScaling::kPerBlock, nullptr, **acts, nullptr);
    ASSERT_TRUE(per_block.ok()) << per_block.status();
    EXPECT_TRUE(per_block->per_block);
    const bool ternary = wv.format == QuantFormat::kTernary;
    const cudaError_t want = ternary ? cudaErrorInvalidValue : cudaSuccess;
    EXPECT_EQ(LaunchQuantMatVec(wv, *per_block, out.get(), nullptr), want);
    EXPECT_EQ(LaunchQuantMatMulMma(wv, *per_block, out.get(), nullptr), want);
    EXPECT_EQ(MatMulQuantizedCuda(**w, *per_block, out.get(), nullptr).ok(), !ternary);
    MatVecChainLink link{wv, *per_block, out.get()};
    link.x.n_tokens = 1;  // chain links are single-token
    EXPECT_EQ(QuantMatVecLinkValid(link, wv.format), !ternary);
    BF_ASSERT_CUDA(cudaDeviceSynchronize());
    StatusOr<ActivationView> per_token =
        QuantizeActivationsCuda(x_dev.get(), n_tokens, cols, ActScaling::kPerToken, nullptr, **acts, nullptr);
    ASSERT_TRUE(per_token.ok()) << per_token.status();
    EXPECT_FALSE(per_token->per_block);
    ActivationView broken = *per_token;
    if (ternary) {
      broken.absmax = nullptr;
    } else {
      broken.block_steps = nullptr;
    }
    EXPECT_EQ(LaunchQuantMatVec(wv, broken, out.get(), nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(LaunchQuantMatMulMma(wv, broken, out.get(), nullptr), cudaErrorInvalidValue);
    EXPECT_FALSE(MatMulQuantizedCuda(**w, broken, out.get(), nullptr).ok());
    link.x = broken;
    link.x.n_tokens = 1;
    EXPECT_FALSE(QuantMatVecLinkValid(link, wv.format));
    BF_ASSERT_CUDA(cudaDeviceSynchronize());
  }
  // Per-block activations take no absmax (their blocks need no all-reduce).
  DeviceArray<float> absmax(n_tokens);
  EXPECT_FALSE(
      QuantizeActivationsCuda(x_dev.get(), n_tokens, cols, ActScaling::kPerBlock, absmax.get(), **acts, nullptr).ok());
}

}  // namespace
}  // namespace bitfleet::kernels::cuda

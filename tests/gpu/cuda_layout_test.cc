// The GPU weight layout checked without a GPU: PackWeightForCuda's host image is read exactly as
// the CUDA kernels read it, through the same helpers of kernels/cuda/weight_layout.h (LaneDot
// for the mat-vec lanes, MmaFragmentA for the tensor-core fragments, CodeOffset / ScaleIndex),
// and the results are compared with the integer reference (ref::DecodeIntBlock /
// MatMulInt8Ref, and MatMulInt8BlocksRef for Q4/Q8 against per-block activations, scaled per
// (token, block) as the kernels do from ActivationView::block_steps). What this cannot check
// (the kernels' loops, reductions and launch shapes) the `gpu` tests check on a device.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_weight.h"
#include "kernels/cuda/weight_layout.h"
#include "kernels/matmul.h"
#include "kernels/ref/matmul_ref.h"
#include "kernels/ref/quant.h"
#include "tests/kernels/kernel_test_util.h"

namespace bitfleet::kernels::cuda {
namespace {

// The reference integer view of a whole tensor: w[r][c] and the scale / offset of its block.
struct IntMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int> w;
  std::vector<float> d;
  std::vector<float> m;
};

IntMatrix DecodeReference(DType type, int64_t rows, int64_t cols, const std::vector<uint8_t>& bytes) {
  IntMatrix ref_w{rows, cols, std::vector<int>(rows * cols), std::vector<float>(rows * cols),
                  std::vector<float>(rows * cols)};
  const float i2s_scale = type == DType::kI2_S ? ref::ReadI2sScale(bytes).value() : 0.0f;
  const uint32_t be = ref::IntBlockElems(type);
  ref::IntBlock blk;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / be; ++b) {
      ref::DecodeIntBlock(type, bytes.data(), r * (cols / be) + b, i2s_scale, &blk);
      for (uint32_t i = 0; i < be; ++i) {
        const int64_t k = r * cols + b * be + i;
        ref_w.w[k] = blk.w[i];
        ref_w.d[k] = blk.d;
        ref_w.m[k] = blk.m;
      }
    }
  }
  return ref_w;
}

float ScaleOf(const CudaWeightImage& img, uint64_t si) {
  return img.format == QuantFormat::kTernary ? img.scales[si] : HalfToFloat(img.half_d[si]);
}
float OffsetOf(const CudaWeightImage& img, uint64_t si) {
  return img.format == QuantFormat::kQ4_1 ? HalfToFloat(img.half_m[si]) : 0.0f;
}

void LoadWords(const CudaWeightImage& img, uint64_t offset, uint32_t (&words)[4]) {
  std::memcpy(words, img.data.data() + offset, sizeof(words));
}

// Quantized activations as the GPU holds them: rows `stride` apart, zero tail, block sums and
// block steps (ActivationView). Per token the steps repeat absmax / 127; per block they are
// QuantizeActivationBlocksRef's.
struct Acts {
  int n_tokens;
  int64_t stride;
  bool per_block;
  std::vector<int8_t> q;
  std::vector<int32_t> sums;
  std::vector<float> absmax;
  std::vector<float> steps;        // n_tokens × stride / 32, zero past cols
  std::vector<int8_t> dense;       // n_tokens × cols, for the reference
  std::vector<float> dense_steps;  // per block: n_tokens × ActBlocks(cols), for the reference
};

Acts MakeActs(int n_tokens, int64_t cols, bool per_block, std::mt19937_64& rng) {
  Acts a{n_tokens, ActivationStride(cols), per_block, {}, {}, std::vector<float>(n_tokens), {}, {}, {}};
  const std::vector<float> x = kernels::testing::RandomActivations(n_tokens, cols, rng);
  const int64_t n32 = a.stride / 32;
  const int64_t used32 = static_cast<int64_t>(ref::ActBlocks(cols));
  ref::ComputeAbsMaxRef(x.data(), n_tokens, cols, a.absmax.data());
  a.dense.resize(static_cast<size_t>(n_tokens) * cols);
  a.steps.assign(static_cast<size_t>(n_tokens) * n32, 0.0f);
  if (per_block) {
    a.dense_steps.resize(static_cast<size_t>(n_tokens) * used32);
    ref::QuantizeActivationBlocksRef(x.data(), n_tokens, cols, a.dense.data(), a.dense_steps.data());
    for (int t = 0; t < n_tokens; ++t) {
      std::copy_n(a.dense_steps.begin() + t * used32, used32, a.steps.begin() + t * n32);
    }
  } else {
    ref::QuantizeActivationsRef(x.data(), n_tokens, cols, a.absmax.data(), a.dense.data());
    for (int t = 0; t < n_tokens; ++t) {
      std::fill_n(a.steps.begin() + t * n32, used32, ref::ActivationScale(a.absmax[t]));
    }
  }
  a.q.assign(static_cast<size_t>(n_tokens) * a.stride, 0);
  a.sums.assign(static_cast<size_t>(n_tokens) * n32, 0);
  for (int t = 0; t < n_tokens; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      a.q[t * a.stride + c] = a.dense[t * cols + c];
      a.sums[t * n32 + c / 32] += a.dense[t * cols + c];
    }
  }
  return a;
}

// A block's integer contribution in real units as the kernels scale it: Q4/Q8 multiply it by
// the (token, block) step; ternary sums are scaled by absmax / 127 at the end (FinishTernary).
template <QuantFormat F>
double Scaled(const Acts& a, int t, int64_t block, double v) {
  if constexpr (F == QuantFormat::kTernary) return v;
  return static_cast<double>(a.steps[t * (a.stride / 32) + block]) * v;
}
template <QuantFormat F>
void FinishTernary(const Acts& a, int64_t rows, std::vector<double>* out) {
  if constexpr (F != QuantFormat::kTernary) return;
  for (int t = 0; t < a.n_tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) (*out)[t * rows + r] *= a.absmax[t] / 127.0f;
  }
}

// The mat-vec kernel's reads: lane (r = lane / 4, quarter = lane % 4) of the warp of group g.
template <QuantFormat F>
std::vector<double> EmulateMatVec(const CudaWeightImage& img, const Acts& a) {
  std::vector<double> out(static_cast<size_t>(a.n_tokens) * img.rows, 0.0);
  for (int64_t g = 0; g < img.n_groups; ++g) {
    for (int lane = 0; lane < 32; ++lane) {
      const int r = lane / 4;
      const int quarter = lane % 4;
      const int64_t row = g * kRowGroup + r;
      for (int64_t s = 0; s < img.n_steps; ++s) {
        uint32_t words[4];
        LoadWords(img, CodeOffset(g, s, r, img.n_steps) + 16 * quarter, words);
        const int64_t block = s * BlocksPerStep(F) + LaneBlock(F, quarter);
        const uint64_t si = ScaleIndex(g, block, r, img.n_blocks);
        for (int t = 0; t < a.n_tokens; ++t) {
          const int dot = LaneDot<F>(words, quarter, a.q.data() + t * a.stride + s * StepElems(F),
                                     a.sums.data() + t * (a.stride / 32) + s * StepElems(F) / 32);
          const double v = static_cast<double>(ScaleOf(img, si)) * dot +
                           static_cast<double>(OffsetOf(img, si)) * a.sums[t * (a.stride / 32) + block];
          if (row < img.rows) out[t * img.rows + row] += Scaled<F>(a, t, block, v);
        }
      }
    }
  }
  FinishTernary<F>(a, img.rows, &out);
  return out;
}

// The tensor-core kernel's reads: tile of groups (2b, 2b + 1); thread (gid, tid) loads words
// 4i + tid of rows gid and gid + 8 per step and forms the A fragments with MmaFragmentA. The
// 16 × 32 A matrix they make up (PTX ISA layout for m16n8k32 .s8) must equal the reference
// integers; the product then follows the kernel's per-block scaling.
template <QuantFormat F>
std::vector<double> EmulateMma(const CudaWeightImage& img, const IntMatrix& want, const Acts& a) {
  std::vector<double> out(static_cast<size_t>(a.n_tokens) * img.rows, 0.0);
  for (int64_t b = 0; b < (img.n_groups + 1) / 2; ++b) {
    for (int64_t s = 0; s < img.n_steps; ++s) {
      uint32_t words[32][2][4] = {};  // [lane][row half][i]
      for (int lane = 0; lane < 32; ++lane) {
        for (int half = 0; half < 2; ++half) {
          const int64_t g = 2 * b + half;
          if (g >= img.n_groups) continue;
          for (int i = 0; i < 4; ++i) {
            uint32_t w;
            std::memcpy(&w, img.data.data() + CodeOffset(g, s, lane / 4, img.n_steps) + 4 * (4 * i + lane % 4), 4);
            words[lane][half][i] = w;
          }
        }
      }
      for (int ks = 0; ks < MmaKSteps(F); ++ks) {
        int A[16][32];
        for (int lane = 0; lane < 32; ++lane) {
          const int gid = lane / 4;
          const int tid = lane % 4;
          uint32_t regs[4];  // a0 (row gid, k 4tid), a1 (gid + 8, 4tid), a2 (gid, 16 + 4tid), a3
          MmaFragmentA<F>(words[lane][0], ks, &regs[0], &regs[2]);
          MmaFragmentA<F>(words[lane][1], ks, &regs[1], &regs[3]);
          for (int j = 0; j < 4; ++j) {
            A[gid][4 * tid + j] = static_cast<int8_t>(regs[0] >> (8 * j));
            A[gid + 8][4 * tid + j] = static_cast<int8_t>(regs[1] >> (8 * j));
            A[gid][16 + 4 * tid + j] = static_cast<int8_t>(regs[2] >> (8 * j));
            A[gid + 8][16 + 4 * tid + j] = static_cast<int8_t>(regs[3] >> (8 * j));
          }
        }
        const int64_t k0 = s * StepElems(F) + 32 * ks;
        for (int rt = 0; rt < 16; ++rt) {
          const int64_t row = b * 16 + rt;
          for (int k = 0; k < 32; ++k) {
            const int64_t col = k0 + k;
            const int expected = row < want.rows && col < want.cols ? want.w[row * want.cols + col] : 0;
            if (row < want.rows && col < want.cols) {
              EXPECT_EQ(A[rt][k], expected) << "A fragment of row " << row << " col " << col;
            }
          }
          if (row >= img.rows) continue;
          const int64_t g = row / kRowGroup;
          const int64_t block = (s * StepElems(F) + 32 * ks) / BlockElems(F);
          const uint64_t si = ScaleIndex(g, block, static_cast<int>(row % kRowGroup), img.n_blocks);
          for (int t = 0; t < a.n_tokens; ++t) {
            int dot = 0;
            for (int k = 0; k < 32; ++k) dot += A[rt][k] * a.q[t * a.stride + k0 + k];
            double v = static_cast<double>(ScaleOf(img, si)) * dot;
            if (F == QuantFormat::kQ4_1) v += static_cast<double>(OffsetOf(img, si)) * a.sums[t * (a.stride / 32) + block];
            out[t * img.rows + row] += Scaled<F>(a, t, block, v);
          }
        }
      }
    }
  }
  FinishTernary<F>(a, img.rows, &out);
  return out;
}

class CudaLayoutTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaLayoutTest, KernelReadsOfThePackedImageMatchTheIntegerReference) {
  const DType type = GetParam();
  std::mt19937_64 rng(0x1A70 + static_cast<int>(type));
  for (int iter = 0; iter < 12; ++iter) {
    const int64_t mult = static_cast<int64_t>(kernels::testing::ColsMultiple(type));
    const int64_t cols = mult * (1 + static_cast<int64_t>(rng() % std::max<int64_t>(1, 1100 / mult)));
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 41);
    const int n_tokens = 1 + static_cast<int>(rng() % 3);
    SCOPED_TRACE(::testing::Message() << DTypeName(type) << " " << rows << "x" << cols);
    const std::vector<uint8_t> bytes = kernels::testing::RandomTensor(type, cols, rows, rng);
    StatusOr<CudaWeightImage> img = PackWeightForCuda(type, cols, rows, bytes);
    ASSERT_TRUE(img.ok()) << img.status();
    EXPECT_EQ(img->stream_bytes, bytes.size());
    EXPECT_EQ(img->data.size(), static_cast<size_t>(img->n_groups * img->n_steps * kGroupStepBytes));

    const IntMatrix want = DecodeReference(type, rows, cols, bytes);
    // Q4/Q8 kernels take either scaling (odd iterations per block), ternary ones per token only.
    const bool per_block = ActScalingFor(type) == ActScaling::kPerBlock && iter % 2 == 1;
    SCOPED_TRACE(per_block ? "per-block activations" : "per-token activations");
    const Acts a = MakeActs(n_tokens, cols, per_block, rng);
    std::vector<double> ref_out(static_cast<size_t>(n_tokens) * rows);
    if (per_block) {
      ASSERT_TRUE(
          ref::MatMulInt8BlocksRef(type, cols, rows, bytes, a.dense.data(), a.dense_steps.data(), n_tokens, ref_out)
              .ok());
    } else {
      ASSERT_TRUE(
          ref::MatMulInt8Ref(type, cols, rows, bytes, a.dense.data(), a.absmax.data(), n_tokens, ref_out).ok());
    }
    std::vector<double> magnitude(ref_out.size(), 0.0);
    for (int t = 0; t < n_tokens; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t k = r * cols + c;
          const double step = a.steps[t * (a.stride / 32) + c / 32];
          magnitude[t * rows + r] +=
              std::fabs((want.w[k] * static_cast<double>(want.d[k]) + want.m[k]) * a.dense[t * cols + c] * step);
        }
      }
    }

    std::vector<double> vec, mma;
    switch (img->format) {
      case QuantFormat::kTernary:
        vec = EmulateMatVec<QuantFormat::kTernary>(*img, a);
        mma = EmulateMma<QuantFormat::kTernary>(*img, want, a);
        break;
      case QuantFormat::kQ4_0:
        vec = EmulateMatVec<QuantFormat::kQ4_0>(*img, a);
        mma = EmulateMma<QuantFormat::kQ4_0>(*img, want, a);
        break;
      case QuantFormat::kQ4_1:
        vec = EmulateMatVec<QuantFormat::kQ4_1>(*img, a);
        mma = EmulateMma<QuantFormat::kQ4_1>(*img, want, a);
        break;
      case QuantFormat::kQ8_0:
        vec = EmulateMatVec<QuantFormat::kQ8_0>(*img, a);
        mma = EmulateMma<QuantFormat::kQ8_0>(*img, want, a);
        break;
    }
    if (HasFailure()) return;
    for (size_t i = 0; i < ref_out.size(); ++i) {
      const double budget = 1e-9 * magnitude[i] + 1e-30;
      ASSERT_LE(std::fabs(vec[i] - ref_out[i]), budget) << "mat-vec output " << i;
      ASSERT_LE(std::fabs(mma[i] - ref_out[i]), budget) << "mma output " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaLayoutTest,
                         ::testing::Values(DType::kTQ2_0, DType::kTQ1_0, DType::kI2_S, DType::kQ4_0, DType::kQ4_1,
                                           DType::kQ8_0),
                         [](const ::testing::TestParamInfo<DType>& info) { return std::string(DTypeName(info.param)); });

TEST(CudaLayoutTest, FloatWeightsArePaddedRows) {
  std::mt19937_64 rng(3);
  for (DType type : {DType::kF32, DType::kF16, DType::kBF16}) {
    const uint64_t rows = 5;
    const uint64_t cols = 13;
    const std::vector<uint8_t> bytes = kernels::testing::RandomTensor(type, cols, rows, rng);
    StatusOr<CudaWeightImage> img = PackWeightForCuda(type, cols, rows, bytes);
    ASSERT_TRUE(img.ok()) << img.status();
    EXPECT_FALSE(img->quantized);
    EXPECT_EQ(img->row_stride, 16);
    const size_t elem = type == DType::kF32 ? 4 : 2;
    for (uint64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(0, std::memcmp(img->data.data() + r * 16 * elem, bytes.data() + r * cols * elem, cols * elem));
      for (size_t i = cols * elem; i < 16 * elem; ++i) EXPECT_EQ(img->data[r * 16 * elem + i], 0);
    }
  }
}

}  // namespace
}  // namespace bitfleet::kernels::cuda

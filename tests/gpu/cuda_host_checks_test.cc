// Host-side checks of the CUDA modules that need no GPU: input validation of the packer, of the
// activation launchers and mat-vec chain links, and of the device KV storage, the CUDA error
// mapping, and the Gumbel-max sampling identity the distributed sampler relies on.
#include <cmath>
#include <vector>

#include "cache/kv_storage_cuda.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/cuda_weight.h"
#include "kernels/cuda/matmul_launch.h"
#include "kernels/cuda/ops_launch.h"
#include "kernels/cuda/sampling_launch.h"

namespace bitfleet::kernels::cuda {
namespace {

TEST(CudaHostChecksTest, PackerRejectsBadInput) {
  const std::vector<uint8_t> bytes(66 * 2, 0);
  EXPECT_EQ(PackWeightForCuda(DType::kTQ2_0, 256, 2, bytes).status().code(), absl::StatusCode::kOk);
  EXPECT_EQ(PackWeightForCuda(DType::kTQ2_0, 256, 3, bytes).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWeightForCuda(DType::kTQ2_0, 128, 2, bytes).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWeightForCuda(DType::kTQ2_0, 256, 0, bytes).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWeightForCuda(DType::kI8, 4, 1, std::vector<uint8_t>(4)).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(PackWeightForCuda(DType::kF16, uint64_t{1} << 40, 1, bytes).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Every activation producer requires the block steps (the Q4/Q8 kernels read only those), and
// refuses a missing one before touching the device; a chain link must fit its weight's scaling.
TEST(CudaHostChecksTest, ActivationLaunchersAndChainLinksCheckTheScaling) {
  // Never dereferenced: the launchers return before any device call.
  std::vector<float> x(256), absmax(1), steps(8);
  std::vector<int8_t> q(256);
  std::vector<int32_t> sums(8);
  EXPECT_EQ(LaunchQuantizeActivations(x.data(), 1, 200, nullptr, 256, q.data(), absmax.data(), sums.data(), nullptr,
                                      nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchQuantizeActivationBlocks(x.data(), 1, 200, 256, q.data(), absmax.data(), sums.data(), nullptr,
                                           nullptr),
            cudaErrorInvalidValue);
  for (const bool per_block : {false, true}) {
    EXPECT_EQ(LaunchRmsNormQuantize(x.data(), x.data(), 1, 200, 1e-5f, per_block, 256, q.data(), absmax.data(),
                                    sums.data(), nullptr, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(LaunchAddRmsNormQuantize(x.data(), x.data(), x.data(), 1, 200, 1e-5f, per_block, 256, q.data(),
                                       absmax.data(), sums.data(), nullptr, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(LaunchRelu2MulRmsNormQuantize(x.data(), x.data(), x.data(), 1, 200, 1e-5f, per_block, 256, q.data(),
                                            absmax.data(), sums.data(), nullptr, nullptr),
              cudaErrorInvalidValue);
  }

  const std::vector<uint8_t> codes(512);
  std::vector<float> out(8);
  for (const QuantFormat f : {QuantFormat::kTernary, QuantFormat::kQ4_0, QuantFormat::kQ4_1, QuantFormat::kQ8_0}) {
    SCOPED_TRACE(static_cast<int>(f));
    MatVecChainLink link;
    link.w.format = f;
    link.w.codes = codes.data();
    link.w.rows = 8;
    link.w.cols = 200;
    link.w.n_groups = 1;
    link.w.n_steps = (200 + StepElems(f) - 1) / StepElems(f);
    link.w.n_blocks = link.w.n_steps * BlocksPerStep(f);
    link.x.q = q.data();
    link.x.absmax = absmax.data();
    link.x.sums = sums.data();
    link.x.block_steps = steps.data();
    link.x.cols = 200;
    link.x.stride = 256;
    link.x.n_tokens = 1;
    link.out = out.data();
    const bool ternary = f == QuantFormat::kTernary;
    EXPECT_TRUE(QuantMatVecLinkValid(link, f));  // per token: every kernel
    link.x.per_block = true;
    EXPECT_EQ(QuantMatVecLinkValid(link, f), !ternary);  // per block: Q4/Q8 only
    link.x.block_steps = nullptr;
    EXPECT_FALSE(QuantMatVecLinkValid(link, f));
    link.x.per_block = false;
    EXPECT_EQ(QuantMatVecLinkValid(link, f), ternary);  // Q4/Q8 need the steps
    link.x.block_steps = steps.data();
    link.x.absmax = nullptr;
    EXPECT_EQ(QuantMatVecLinkValid(link, f), !ternary);  // ternary needs the absmax
  }
}

TEST(CudaHostChecksTest, CudaErrorsMapToStatusCodes) {
  EXPECT_TRUE(CudaStatus(cudaSuccess, "x").ok());
  EXPECT_EQ(CudaStatus(cudaErrorMemoryAllocation, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CudaStatus(cudaErrorInvalidValue, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaStatus(cudaErrorNoDevice, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CudaStatus(cudaErrorLaunchFailure, "x").code(), absl::StatusCode::kInternal);
  EXPECT_NE(CudaStatus(cudaErrorLaunchFailure, "my op").message().find("my op"), absl::string_view::npos);
}

TEST(CudaHostChecksTest, KvStorageSizesAreValidated) {
  cache::KvStorageOptions o;
  o.num_layers = 2;
  o.n_kv_heads = 4;
  o.head_dim = 128;
  o.num_blocks = 100;
  o.block_size = 16;
  EXPECT_EQ(cache::KvStorageCuda::BytesFor(o).value(), uint64_t{2} * 2 * 100 * 16 * 4 * 128 * 2);
  o.head_dim = 0;
  EXPECT_EQ(cache::KvStorageCuda::BytesFor(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.head_dim = 128;
  o.type = cache::KvType::kInt8;
  EXPECT_EQ(cache::KvStorageCuda::BytesFor(o).status().code(), absl::StatusCode::kUnimplemented);
  o.type = cache::KvType::kF16;
  o.num_blocks = 1 << 30;
  o.block_size = 1 << 30;
  EXPECT_EQ(cache::KvStorageCuda::BytesFor(o).status().code(), absl::StatusCode::kResourceExhausted);
  if (UsableCudaDevices(nullptr) == 0) {
    o.num_blocks = 4;
    o.block_size = 16;
    EXPECT_EQ(cache::KvStorageCuda::Create(o).status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

// Gumbel-max with GumbelNoise is an exact sampler of softmax: the frequencies of the winners
// over many seeds match the probabilities.
TEST(CudaHostChecksTest, GumbelMaxSamplesTheSoftmax) {
  const std::vector<float> logits = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f};
  const float inv_t = 1.25f;
  std::vector<double> p(logits.size());
  double z = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) z += (p[i] = std::exp(static_cast<double>(logits[i]) * inv_t));
  constexpr int kDraws = 200000;
  std::vector<int> counts(logits.size(), 0);
  for (int draw = 0; draw < kDraws; ++draw) {
    const uint64_t seed = 0x5eed0000u + static_cast<uint64_t>(draw) * 7919u;
    size_t best = 0;
    double best_key = -INFINITY;
    for (size_t i = 0; i < logits.size(); ++i) {
      const double key = logits[i] * inv_t + GumbelNoise(seed, static_cast<int64_t>(i) + 1000);
      if (key > best_key) best_key = key, best = i;
    }
    ++counts[best];
  }
  for (size_t i = 0; i < logits.size(); ++i) {
    const double want = p[i] / z;
    const double sigma = std::sqrt(want * (1 - want) / kDraws);
    EXPECT_NEAR(static_cast<double>(counts[i]) / kDraws, want, 5 * sigma) << "token " << i;
  }
}

}  // namespace
}  // namespace bitfleet::kernels::cuda

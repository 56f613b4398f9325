// Host-side checks of the CUDA modules that need no GPU: input validation of the packer and of
// the device KV storage, the CUDA error mapping, and the Gumbel-max sampling identity the
// distributed sampler relies on.
#include <cmath>
#include <vector>

#include "cache/kv_storage_cuda.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/cuda_weight.h"
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

// Device KV storage: sizes, zeroed pools, per-layer views with the CPU layout, block copies.
#include <numeric>
#include <random>
#include <vector>

#include "cache/kv_storage_cuda.h"
#include "tests/gpu/gpu_test_util.h"

namespace bitfleet::cache {
namespace {

KvStorageOptions SmallOptions() {
  KvStorageOptions o;
  o.num_layers = 3;
  o.n_kv_heads = 2;
  o.head_dim = 64;
  o.num_blocks = 10;
  o.block_size = 16;
  return o;
}

TEST(KvStorageCudaTest, AllocatesZeroedPoolsWithTheCpuLayout) {
  BF_REQUIRE_GPU();
  const KvStorageOptions o = SmallOptions();
  StatusOr<std::unique_ptr<KvStorageCuda>> s = KvStorageCuda::Create(o);
  ASSERT_TRUE(s.ok()) << s.status();
  const uint64_t pool_elems = uint64_t{10} * 16 * 2 * 64;
  EXPECT_EQ((*s)->bytes(), 3 * 2 * pool_elems * sizeof(uint16_t));
  EXPECT_EQ((*s)->bytes(), KvStorageCuda::BytesFor(o).value());
  for (int layer = 0; layer < 3; ++layer) {
    const kernels::PagedKv kv = (*s)->Layer(layer);
    EXPECT_EQ(kv.block_size, 16);
    EXPECT_EQ(kv.n_kv_heads, 2);
    EXPECT_EQ(kv.head_dim, 64);
    EXPECT_EQ(kv.num_blocks, 10);
    EXPECT_EQ(kv.v, kv.k + pool_elems);
    if (layer > 0) {
      EXPECT_EQ(kv.k, (*s)->Layer(layer - 1).v + pool_elems);
    }
    std::vector<uint16_t> host(pool_elems, 1);
    BF_ASSERT_CUDA(cudaMemcpy(host.data(), kv.k, pool_elems * 2, cudaMemcpyDeviceToHost));
    EXPECT_EQ(host, std::vector<uint16_t>(pool_elems, 0));
  }
}

TEST(KvStorageCudaTest, CopyBlockCopiesEveryLayerAndNothingElse) {
  BF_REQUIRE_GPU();
  const KvStorageOptions o = SmallOptions();
  std::unique_ptr<KvStorageCuda> s = KvStorageCuda::Create(o).value();
  const uint64_t pool_elems = uint64_t{10} * 16 * 2 * 64;
  const uint64_t block_elems = pool_elems / 10;
  std::mt19937 rng(9);
  std::vector<std::vector<uint16_t>> before;
  for (int layer = 0; layer < 3; ++layer) {
    for (uint16_t* pool : {s->Layer(layer).k, s->Layer(layer).v}) {
      std::vector<uint16_t> data(pool_elems);
      for (uint16_t& h : data) h = static_cast<uint16_t>(rng());
      BF_ASSERT_CUDA(cudaMemcpy(pool, data.data(), pool_elems * 2, cudaMemcpyHostToDevice));
      before.push_back(data);
    }
  }
  ASSERT_TRUE(s->CopyBlock(7, 2, nullptr).ok());
  BF_ASSERT_CUDA(cudaDeviceSynchronize());
  int p = 0;
  for (int layer = 0; layer < 3; ++layer) {
    for (uint16_t* pool : {s->Layer(layer).k, s->Layer(layer).v}) {
      std::vector<uint16_t> want = before[p++];
      std::copy_n(want.begin() + 7 * block_elems, block_elems, want.begin() + 2 * block_elems);
      std::vector<uint16_t> got(pool_elems);
      BF_ASSERT_CUDA(cudaMemcpy(got.data(), pool, pool_elems * 2, cudaMemcpyDeviceToHost));
      EXPECT_EQ(got, want) << "layer " << layer;
    }
  }
  EXPECT_EQ(s->CopyBlock(10, 2, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->CopyBlock(0, -1, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvStorageCudaTest, OutOfMemoryIsResourceExhausted) {
  BF_REQUIRE_GPU();
  KvStorageOptions o = SmallOptions();
  o.num_blocks = 1 << 30;  // 2^30 blocks × 16 × 128 × 2 B × 2 × 3 layers: far beyond any GPU
  EXPECT_EQ(KvStorageCuda::Create(o).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace bitfleet::cache

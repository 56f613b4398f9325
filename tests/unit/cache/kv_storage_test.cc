#include "cache/kv_storage.h"

#include "gtest/gtest.h"

namespace bitfleet::cache {
namespace {

KvStorageOptions Small() {
  KvStorageOptions o;
  o.num_layers = 3;
  o.n_kv_heads = 2;
  o.head_dim = 8;
  o.num_blocks = 5;
  o.block_size = 4;
  return o;
}

TEST(KvStorageTest, LayersHaveDistinctZeroedPoolsOfTheRightSize) {
  auto storage = KvStorage::Create(Small());
  ASSERT_TRUE(storage.ok()) << storage.status();
  const size_t elems = 5 * 4 * 2 * 8;
  EXPECT_EQ((*storage)->bytes(), 3u * 2 * elems * sizeof(uint16_t));
  for (int layer = 0; layer < 3; ++layer) {
    kernels::PagedKv kv = (*storage)->Layer(layer);
    EXPECT_EQ(kv.block_size, 4);
    EXPECT_EQ(kv.n_kv_heads, 2);
    EXPECT_EQ(kv.head_dim, 8);
    EXPECT_EQ(kv.num_blocks, 5);
    ASSERT_NE(kv.k, nullptr);
    ASSERT_NE(kv.v, nullptr);
    EXPECT_NE(kv.k, kv.v);
    for (size_t i = 0; i < elems; ++i) {
      ASSERT_EQ(kv.k[i] | kv.v[i], 0);
    }
    // Writable to the last element; the next layer's pools do not overlap.
    kv.k[elems - 1] = 0x3c00;
    kv.v[elems - 1] = 0x3c00;
    if (layer > 0) {
      EXPECT_EQ((*storage)->Layer(layer - 1).k[elems - 1], 0x3c00);
    }
  }
  EXPECT_NE((*storage)->Layer(0).k, (*storage)->Layer(1).k);
}

// int8: codes and one float step per group (32 elements, or the row when head_dim is not a
// multiple of 32), both zeroed and writable to their last element.
TEST(KvStorageTest, Int8PoolsHoldCodesAndSteps) {
  for (const int head_dim : {8, 64}) {
    KvStorageOptions o = Small();
    o.head_dim = head_dim;
    o.type = KvType::kInt8;
    auto storage = KvStorage::Create(o);
    ASSERT_TRUE(storage.ok()) << storage.status();
    const size_t elems = size_t{5} * 4 * 2 * head_dim;
    const size_t steps = elems / (head_dim == 64 ? 32 : head_dim);
    EXPECT_EQ((*storage)->bytes(), 3u * 2 * (elems + steps * sizeof(float)));
    for (int layer = 0; layer < 3; ++layer) {
      kernels::PagedKv kv = (*storage)->Layer(layer);
      ASSERT_TRUE(kv.int8());
      EXPECT_EQ(kv.k, nullptr);
      EXPECT_EQ(kv.v, nullptr);
      ASSERT_NE(kv.k8, nullptr);
      ASSERT_NE(kv.v8, nullptr);
      ASSERT_NE(kv.k_steps, nullptr);
      ASSERT_NE(kv.v_steps, nullptr);
      for (size_t i = 0; i < elems; ++i) ASSERT_EQ(kv.k8[i] | kv.v8[i], 0);
      for (size_t i = 0; i < steps; ++i) ASSERT_EQ(kv.k_steps[i] + kv.v_steps[i], 0.0f);
      kv.k8[elems - 1] = kv.v8[elems - 1] = 1;
      kv.k_steps[steps - 1] = kv.v_steps[steps - 1] = 1.0f;
    }
  }
  EXPECT_STREQ(KvTypeName(KvType::kInt8), "int8");
  EXPECT_EQ(ParseKvType("f16").value(), KvType::kF16);
  EXPECT_EQ(ParseKvType("int8").value(), KvType::kInt8);
  EXPECT_EQ(ParseKvType("fp8").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvStorageTest, RejectsBadOptions) {
  KvStorageOptions o = Small();
  o.num_blocks = 0;
  EXPECT_EQ(KvStorage::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Small();
  o.head_dim = -1;
  EXPECT_EQ(KvStorage::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Small();
  o.type = KvType::kInt8;
  o.num_blocks = -1;
  EXPECT_EQ(KvStorage::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Small();
  o.num_blocks = 1 << 30;
  o.block_size = 1 << 30;
  EXPECT_EQ(KvStorage::Create(o).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace bitfleet::cache

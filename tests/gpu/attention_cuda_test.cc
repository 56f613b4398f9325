// The CUDA paged KV write and paged attention against kernels/ref/ops_ref.h, on random
// continuous-batching steps: several sequences with shuffled block tables, each adding a
// prefill chunk or one decode token, GQA ratios 1..4, head dims 64..256, block sizes 8..32.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/ref/ops_ref.h"
#include "tests/gpu/gpu_test_util.h"

namespace bitfleet::kernels::cuda {
namespace {

using gputest::DeviceArray;
using gputest::GuardedDeviceFloats;

struct Sequence {
  int length;   // positions 0..length-1 are in the cache after the step
  int n_new;    // the step's tokens: positions length-n_new..length-1
  std::vector<int32_t> table;
};

TEST(AttentionCudaTest, WriteKvAndAttentionMatchReferenceOnRandomSteps) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(0xA77E);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int iter = 0; iter < 30; ++iter) {
    const int block_size = std::vector<int>{8, 16, 32}[rng() % 3];
    const int n_kv = std::vector<int>{1, 2, 4}[rng() % 3];
    const int group = std::vector<int>{1, 2, 4}[rng() % 3];
    const int head_dim = std::vector<int>{64, 80, 128, 256}[rng() % 4];
    const int n_heads = n_kv * group;
    const int n_seqs = 1 + static_cast<int>(rng() % 5);
    SCOPED_TRACE(::testing::Message() << "block " << block_size << " kv " << n_kv << " heads " << n_heads << " hd "
                                      << head_dim << " seqs " << n_seqs);

    // Sequences, then one shared pool of shuffled block ids.
    std::vector<Sequence> seqs(n_seqs);
    int total_blocks = 0;
    int max_blocks = 0;
    for (Sequence& s : seqs) {
      const bool decode = rng() % 2 == 0;
      s.length = 1 + static_cast<int>(rng() % 700);
      s.n_new = decode ? 1 : 1 + static_cast<int>(rng() % std::min(s.length, 70));
      const int blocks = (s.length + block_size - 1) / block_size;
      total_blocks += blocks;
      max_blocks = std::max(max_blocks, blocks);
    }
    const int num_blocks = total_blocks + 3;
    std::vector<int32_t> ids(num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::vector<int32_t> tables(static_cast<size_t>(n_seqs) * max_blocks, -1);
    for (int i = 0, next = 0; i < n_seqs; ++i) {
      const int blocks = (seqs[i].length + block_size - 1) / block_size;
      for (int b = 0; b < blocks; ++b) tables[i * max_blocks + b] = ids[next++];
      seqs[i].table.assign(tables.begin() + i * max_blocks, tables.begin() + i * max_blocks + blocks);
    }

    const size_t pool_elems = static_cast<size_t>(num_blocks) * block_size * n_kv * head_dim;
    std::vector<uint16_t> k_host(pool_elems, 0), v_host(pool_elems, 0);
    PagedKv kv_host{k_host.data(), v_host.data(), block_size, n_kv, head_dim, num_blocks};

    // Every position of every sequence is written in this one step (its "history" and its new
    // tokens alike); the query tokens are the new ones.
    const int row = n_kv * head_dim;
    std::vector<int32_t> w_seq, w_pos, q_seq, q_pos;
    std::vector<float> k_rows, v_rows;
    float max_v = 0.0f;
    for (int i = 0; i < n_seqs; ++i) {
      std::vector<float> k(static_cast<size_t>(seqs[i].length) * row), v(k.size());
      for (float& f : k) f = normal(rng);
      for (float& f : v) max_v = std::max(max_v, std::fabs(f = normal(rng) * 2.0f));
      ref::WriteKvRef(kv_host, seqs[i].table.data(), 0, seqs[i].length, k.data(), v.data());
      k_rows.insert(k_rows.end(), k.begin(), k.end());
      v_rows.insert(v_rows.end(), v.begin(), v.end());
      for (int p = 0; p < seqs[i].length; ++p) {
        w_seq.push_back(i);
        w_pos.push_back(p);
        if (p >= seqs[i].length - seqs[i].n_new) {
          q_seq.push_back(i);
          q_pos.push_back(p);
        }
      }
    }

    DeviceArray<uint16_t> k_pool(pool_elems), v_pool(pool_elems);
    DeviceArray<int32_t> tables_dev(tables), w_seq_dev(w_seq), w_pos_dev(w_pos), q_seq_dev(q_seq), q_pos_dev(q_pos);
    DeviceArray<float> k_dev(k_rows), v_dev(v_rows);
    PagedKv kv{k_pool.get(), v_pool.get(), block_size, n_kv, head_dim, num_blocks};
    PagedKvBatch write_batch{w_seq_dev.get(), w_pos_dev.get(), tables_dev.get(), max_blocks};
    BF_ASSERT_LAUNCH(LaunchWriteKv(kv, write_batch, static_cast<int>(w_seq.size()), k_dev.get(), v_dev.get(), nullptr));
    ASSERT_EQ(k_pool.ToHost(), k_host) << "K pool differs from WriteKvRef";
    ASSERT_EQ(v_pool.ToHost(), v_host) << "V pool differs from WriteKvRef";

    const int n_q = static_cast<int>(q_seq.size());
    std::vector<float> q(static_cast<size_t>(n_q) * n_heads * head_dim);
    for (float& f : q) f = normal(rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    DeviceArray<float> q_dev(q);
    GuardedDeviceFloats out(q.size());
    PagedKvBatch q_batch{q_seq_dev.get(), q_pos_dev.get(), tables_dev.get(), max_blocks};
    BF_ASSERT_LAUNCH(LaunchAttentionPaged(q_dev.get(), n_q, n_heads, kv, q_batch, scale, out.data(), nullptr));
    std::string error;
    const std::vector<float> got = out.Check(&error);
    ASSERT_EQ(error, "");

    const size_t q_row = static_cast<size_t>(n_heads) * head_dim;
    for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n_new, ++i) {
      std::vector<float> want(seqs[i].n_new * q_row);
      ref::AttentionPagedRef(q.data() + t0 * q_row, seqs[i].n_new, n_heads, kv_host, seqs[i].table.data(),
                             seqs[i].length - seqs[i].n_new, scale, want.data());
      for (size_t j = 0; j < want.size(); ++j) {
        ASSERT_LE(std::fabs(got[t0 * q_row + j] - want[j]), 2e-5 * max_v)
            << "sequence " << i << " token " << j / q_row << " element " << j % q_row;
      }
    }
  }
}

TEST(AttentionCudaTest, RejectsUnsupportedHeadDims) {
  BF_REQUIRE_GPU();
  PagedKv kv{nullptr, nullptr, 16, 2, 260, 4};
  EXPECT_EQ(cudaErrorInvalidValue, LaunchAttentionPaged(nullptr, 1, 4, kv, {}, 1.0f, nullptr, nullptr));
  kv.head_dim = 36;  // not a multiple of 8
  EXPECT_EQ(cudaErrorInvalidValue, LaunchAttentionPaged(nullptr, 1, 4, kv, {}, 1.0f, nullptr, nullptr));
  kv.head_dim = 64;
  EXPECT_EQ(cudaErrorInvalidValue, LaunchAttentionPaged(nullptr, 1, 3, kv, {}, 1.0f, nullptr, nullptr));  // 3 % 2
}

}  // namespace
}  // namespace bitfleet::kernels::cuda

// The CUDA paged KV write and paged attention against kernels/ref/ops_ref.h, on random
// continuous-batching steps: several sequences with shuffled block tables, each adding a
// prefill chunk or one decode token, GQA ratios 1..8, head dims 64..256, block sizes 8..32.
// The split (flash-decoding) launcher is checked the same way on contexts up to 3000 keys with
// max_keys tight, loose and too small, so steps see one split, many, and empty ones.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/ops_launch.h"
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

// Gives every sequence its blocks out of one shuffled pool of ids (3 spare blocks); fills
// `tables` (n_seqs × *max_blocks, -1 past a sequence's blocks) and returns the pool's block count.
int AssignBlockTables(std::vector<Sequence>& seqs, int block_size, std::mt19937_64& rng, std::vector<int32_t>* tables,
                      int* max_blocks) {
  const int n_seqs = static_cast<int>(seqs.size());
  int total_blocks = 0;
  *max_blocks = 0;
  for (const Sequence& s : seqs) {
    const int blocks = (s.length + block_size - 1) / block_size;
    total_blocks += blocks;
    *max_blocks = std::max(*max_blocks, blocks);
  }
  const int num_blocks = total_blocks + 3;
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  tables->assign(static_cast<size_t>(n_seqs) * *max_blocks, -1);
  for (int i = 0, next = 0; i < n_seqs; ++i) {
    const int blocks = (seqs[i].length + block_size - 1) / block_size;
    for (int b = 0; b < blocks; ++b) (*tables)[i * *max_blocks + b] = ids[next++];
    seqs[i].table.assign(tables->begin() + i * *max_blocks, tables->begin() + i * *max_blocks + blocks);
  }
  return num_blocks;
}

// ref::AttentionPagedRef of the step's queries (sequence after sequence, n_new tokens each).
std::vector<float> ReferenceOutputs(const std::vector<float>& q, const std::vector<Sequence>& seqs, int n_heads,
                                    const PagedKv& kv_host, float scale) {
  const size_t q_row = static_cast<size_t>(n_heads) * kv_host.head_dim;
  std::vector<float> want(q.size());
  for (size_t i = 0, t0 = 0; i < seqs.size(); t0 += seqs[i].n_new, ++i) {
    ref::AttentionPagedRef(q.data() + t0 * q_row, seqs[i].n_new, n_heads, kv_host, seqs[i].table.data(),
                           seqs[i].length - seqs[i].n_new, scale, want.data() + t0 * q_row);
  }
  return want;
}

// Checks got against want within 2e-5 * max|V|; q_row = n_heads * head_dim floats per token.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, size_t q_row, float max_v) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t j = 0; j < want.size(); ++j) {
    ASSERT_LE(std::fabs(got[j] - want[j]), 2e-5 * max_v) << "token " << j / q_row << " element " << j % q_row;
  }
}

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
    for (Sequence& s : seqs) {
      const bool decode = rng() % 2 == 0;
      s.length = 1 + static_cast<int>(rng() % 700);
      s.n_new = decode ? 1 : 1 + static_cast<int>(rng() % std::min(s.length, 70));
    }
    std::vector<int32_t> tables;
    int max_blocks = 0;
    const int num_blocks = AssignBlockTables(seqs, block_size, rng, &tables, &max_blocks);

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
    ExpectClose(got, ReferenceOutputs(q, seqs, n_heads, kv_host, scale), static_cast<size_t>(n_heads) * head_dim, max_v);
    if (HasFatalFailure()) return;
  }
}

// LaunchRopeWriteKv gives what LaunchRope on q, LaunchRope on k and LaunchWriteKv give, bit for
// bit: the roped q and k rows and both pools, on random steps (several sequences, prefill chunks
// and decode tokens, GQA, partial rotation, both pair layouts).
TEST(AttentionCudaTest, FusedRopeWriteKvMatchesSeparateLaunchesBitForBit) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(0xF0E7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto same_bits = [](const auto& a, const auto& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
  };
  for (int iter = 0; iter < 20; ++iter) {
    const int block_size = std::vector<int>{8, 16, 32}[rng() % 3];
    const int n_kv = std::vector<int>{1, 2, 4}[rng() % 3];
    const int group = std::vector<int>{1, 2, 4, 8}[rng() % 4];
    const int head_dim = std::vector<int>{64, 80, 128}[rng() % 3];
    const int rot_dim = rng() % 2 == 0 ? head_dim : head_dim / 2;
    const bool neox = rng() % 2 == 0;
    const int n_heads = n_kv * group;
    const int n_seqs = 1 + static_cast<int>(rng() % 5);
    SCOPED_TRACE(::testing::Message() << "block " << block_size << " kv " << n_kv << " heads " << n_heads << " hd "
                                      << head_dim << " rot " << rot_dim << " neox " << neox << " seqs " << n_seqs);
    std::vector<Sequence> seqs(n_seqs);
    for (Sequence& s : seqs) {
      s.length = 1 + static_cast<int>(rng() % 3000);
      s.n_new = rng() % 2 == 0 ? 1 : 1 + static_cast<int>(rng() % std::min(s.length, 70));
    }
    std::vector<int32_t> tables;
    int max_blocks = 0;
    const int num_blocks = AssignBlockTables(seqs, block_size, rng, &tables, &max_blocks);
    std::vector<int32_t> token_seq, token_pos;
    for (int i = 0; i < n_seqs; ++i) {
      for (int p = seqs[i].length - seqs[i].n_new; p < seqs[i].length; ++p) {
        token_seq.push_back(i);
        token_pos.push_back(p);
      }
    }
    const int n = static_cast<int>(token_seq.size());
    std::vector<float> q(static_cast<size_t>(n) * n_heads * head_dim), k(static_cast<size_t>(n) * n_kv * head_dim),
        v(k.size());
    for (auto* rows : {&q, &k, &v}) {
      for (float& f : *rows) f = normal(rng) * 3.0f;
    }
    const size_t pool_elems = static_cast<size_t>(num_blocks) * block_size * n_kv * head_dim;
    DeviceArray<int32_t> tables_dev(tables), seq_dev(token_seq), pos_dev(token_pos);
    const PagedKvBatch batch{seq_dev.get(), pos_dev.get(), tables_dev.get(), max_blocks};
    const float base = rng() % 2 == 0 ? 10000.0f : 500000.0f;

    DeviceArray<float> q_a(q), k_a(k), v_a(v);
    const std::vector<uint16_t> empty_pool(pool_elems, 0);
    DeviceArray<uint16_t> k_pool_a(empty_pool), v_pool_a(empty_pool);
    const PagedKv kv_a{k_pool_a.get(), v_pool_a.get(), block_size, n_kv, head_dim, num_blocks};
    BF_ASSERT_LAUNCH(LaunchRope(q_a.get(), pos_dev.get(), n, n_heads, head_dim, rot_dim, base, neox, nullptr));
    BF_ASSERT_LAUNCH(LaunchRope(k_a.get(), pos_dev.get(), n, n_kv, head_dim, rot_dim, base, neox, nullptr));
    BF_ASSERT_LAUNCH(LaunchWriteKv(kv_a, batch, n, k_a.get(), v_a.get(), nullptr));

    DeviceArray<float> q_b(q), k_b(k), v_b(v);
    DeviceArray<uint16_t> k_pool_b(empty_pool), v_pool_b(empty_pool);
    const PagedKv kv_b{k_pool_b.get(), v_pool_b.get(), block_size, n_kv, head_dim, num_blocks};
    BF_ASSERT_LAUNCH(
        LaunchRopeWriteKv(q_b.get(), k_b.get(), v_b.get(), n, n_heads, kv_b, batch, rot_dim, base, neox, nullptr));

    ASSERT_TRUE(same_bits(q_b.ToHost(), q_a.ToHost())) << "roped q";
    ASSERT_TRUE(same_bits(k_b.ToHost(), k_a.ToHost())) << "roped k";
    ASSERT_TRUE(same_bits(k_pool_b.ToHost(), k_pool_a.ToHost())) << "K pool";
    ASSERT_TRUE(same_bits(v_pool_b.ToHost(), v_pool_a.ToHost())) << "V pool";
    ASSERT_FALSE(same_bits(q_a.ToHost(), q)) << "the rotation did nothing";
  }
  // Bad shapes are refused before anything runs.
  PagedKv kv{nullptr, nullptr, 16, 2, 64, 1};
  const PagedKvBatch batch{};
  EXPECT_EQ(LaunchRopeWriteKv(nullptr, nullptr, nullptr, 1, 4, kv, batch, 65, 1e4f, false, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchRopeWriteKv(nullptr, nullptr, nullptr, 1, 4, kv, batch, 128, 1e4f, false, nullptr),
            cudaErrorInvalidValue);
}

TEST(AttentionCudaTest, SplitAttentionMatchesReferenceOnRandomSteps) {
  BF_REQUIRE_GPU();
  std::mt19937_64 rng(0x5B117);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  bool saw_one_split = false;
  int most_splits = 0;
  int tokens_with_empty_splits = 0;
  for (int iter = 0; iter < 12; ++iter) {
    // Even iterations decode only (few tokens: many splits), odd ones mix prefill chunks in.
    const bool decode_step = iter % 2 == 0;
    const int block_size = std::vector<int>{8, 16, 32}[rng() % 3];
    const int n_kv = 1 + static_cast<int>(rng() % 2);
    const int group = std::vector<int>{1, 2, 4, 5, 8}[rng() % 5];
    const int head_dim = std::vector<int>{64, 80, 128, 256}[rng() % 4];
    const float q_gain = rng() % 2 == 0 ? 1.0f : 4.0f;  // 4: peaked softmax, splits' maxima far apart
    const int n_heads = n_kv * group;
    const int n_seqs = decode_step ? 2 + static_cast<int>(rng() % 3) : 1 + static_cast<int>(rng() % 3);
    SCOPED_TRACE(::testing::Message() << "iter " << iter << " block " << block_size << " kv " << n_kv << " heads "
                                      << n_heads << " hd " << head_dim << " seqs " << n_seqs);

    std::vector<Sequence> seqs(n_seqs);
    for (int i = 0; i < n_seqs; ++i) {
      Sequence& s = seqs[i];
      if (decode_step) {
        // A long context and a short one (most of its splits empty), the rest anywhere.
        s.length = 1 + static_cast<int>(i == 0 ? 999 + rng() % 2000 : i == 1 ? rng() % 200 : rng() % 3000);
        s.n_new = 1;
      } else {
        s.length = 1 + static_cast<int>(rng() % 3000);
        s.n_new = rng() % 3 == 0 ? 1 : 1 + static_cast<int>(rng() % std::min(s.length, 12));
      }
    }
    std::vector<int32_t> tables;
    int max_blocks = 0;
    const int num_blocks = AssignBlockTables(seqs, block_size, rng, &tables, &max_blocks);

    // Pools written on the host (LaunchWriteKv is checked above); the queries are the new tokens.
    const size_t pool_elems = static_cast<size_t>(num_blocks) * block_size * n_kv * head_dim;
    std::vector<uint16_t> k_host(pool_elems, 0), v_host(pool_elems, 0);
    PagedKv kv_host{k_host.data(), v_host.data(), block_size, n_kv, head_dim, num_blocks};
    std::vector<int32_t> q_seq, q_pos;
    float max_v = 0.0f;
    int max_length = 0;
    for (int i = 0; i < n_seqs; ++i) {
      std::vector<float> k(static_cast<size_t>(seqs[i].length) * n_kv * head_dim), v(k.size());
      for (float& f : k) f = uniform(rng);
      for (float& f : v) max_v = std::max(max_v, std::fabs(f = 2.0f * uniform(rng)));
      ref::WriteKvRef(kv_host, seqs[i].table.data(), 0, seqs[i].length, k.data(), v.data());
      for (int p = seqs[i].length - seqs[i].n_new; p < seqs[i].length; ++p) {
        q_seq.push_back(i);
        q_pos.push_back(p);
      }
      max_length = std::max(max_length, seqs[i].length);
    }
    const int n_q = static_cast<int>(q_seq.size());
    std::vector<float> q(static_cast<size_t>(n_q) * n_heads * head_dim);
    for (float& f : q) f = q_gain * normal(rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

    DeviceArray<uint16_t> k_pool(k_host), v_pool(v_host);
    DeviceArray<int32_t> tables_dev(tables), q_seq_dev(q_seq), q_pos_dev(q_pos);
    DeviceArray<float> q_dev(q);
    PagedKv kv{k_pool.get(), v_pool.get(), block_size, n_kv, head_dim, num_blocks};
    PagedKvBatch q_batch{q_seq_dev.get(), q_pos_dev.get(), tables_dev.get(), max_blocks};
    const std::vector<float> want = ReferenceOutputs(q, seqs, n_heads, kv_host, scale);

    // max_keys: tight, loose, too small (the last split takes the rest) and 1 (one split).
    const int loose = max_length + 1 + static_cast<int>(rng() % 2000);
    for (const int max_keys : {max_length, loose, std::max(1, max_length / 4), 1}) {
      SCOPED_TRACE(::testing::Message() << "max_keys " << max_keys);
      const AttentionSplitPlan plan = PlanAttentionSplits(n_q, n_heads, max_keys);
      const int64_t ws_floats = AttentionSplitWorkspaceFloats(n_q, n_heads, head_dim, max_keys);
      if (plan.n_splits > 1) {
        ASSERT_GE(ws_floats, int64_t{n_q} * n_heads * plan.n_splits * (head_dim + 2));
      }
      saw_one_split |= plan.n_splits == 1;
      most_splits = std::max(most_splits, plan.n_splits);
      for (const int32_t pos : q_pos) {
        if (plan.n_splits > 1 && pos + 1 <= int64_t{plan.n_splits - 1} * plan.split_keys) ++tokens_with_empty_splits;
      }
      // A NaN workspace: a partial merged without having been written would show.
      DeviceArray<float> workspace(
          std::vector<float>(std::max<int64_t>(ws_floats, 1), std::numeric_limits<float>::quiet_NaN()));
      GuardedDeviceFloats out(q.size());
      BF_ASSERT_LAUNCH(LaunchAttentionPagedSplit(q_dev.get(), n_q, n_heads, kv, q_batch, scale, max_keys,
                                                 workspace.get(), ws_floats, out.data(), nullptr));
      std::string error;
      const std::vector<float> got = out.Check(&error);
      ASSERT_EQ(error, "");
      ExpectClose(got, want, static_cast<size_t>(n_heads) * head_dim, max_v);
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_TRUE(saw_one_split);
  EXPECT_GE(most_splits, 16);
  EXPECT_GT(tokens_with_empty_splits, 0);
}

TEST(AttentionCudaTest, SplitWorkspaceBoundCoversSmallerSteps) {
  BF_REQUIRE_GPU();
  const int head_dim = 128;
  for (const int n_heads : {1, 8, 20, 32}) {
    for (const int n_tokens : {1, 2, 3, 7, 33, 100, 2048}) {
      for (const int max_keys : {1, 64, 65, 513, 4096, 100000}) {
        const int64_t bound = AttentionSplitWorkspaceFloats(n_tokens, n_heads, head_dim, max_keys);
        for (int n = 1; n <= n_tokens; n += 1 + n / 8) {
          for (const int keys : {1, 64, 65, 200, 513, 4096, 100000}) {
            if (keys > max_keys) continue;
            SCOPED_TRACE(::testing::Message() << n << " of " << n_tokens << " tokens, " << n_heads << " heads, "
                                              << keys << " of " << max_keys << " keys");
            const AttentionSplitPlan plan = PlanAttentionSplits(n, n_heads, keys);
            ASSERT_GE(plan.n_splits, 1);
            ASSERT_GE(int64_t{plan.n_splits} * plan.split_keys, keys);  // the splits cover max_keys
            ASSERT_LT(int64_t{plan.n_splits - 1} * plan.split_keys, keys);  // and none starts past it
            const int64_t need = plan.n_splits > 1 ? int64_t{n} * n_heads * plan.n_splits * (head_dim + 2) : 0;
            ASSERT_LE(need, bound);
          }
        }
      }
    }
  }
  EXPECT_LE(AttentionSplitWorkspaceFloats(1 << 20, 64, head_dim, 1 << 30), 4096 * (head_dim + 2));
}

TEST(AttentionCudaTest, SplitAttentionRejectsBadArguments) {
  BF_REQUIRE_GPU();
  PagedKv kv{nullptr, nullptr, 16, 2, 64, 4};
  const int n_heads = 4;
  const int max_keys = 1000;
  const AttentionSplitPlan plan = PlanAttentionSplits(1, n_heads, max_keys);
  ASSERT_GT(plan.n_splits, 1);
  const int64_t need = int64_t{n_heads} * plan.n_splits * (kv.head_dim + 2);
  ASSERT_GE(AttentionSplitWorkspaceFloats(1, n_heads, kv.head_dim, max_keys), need);
  DeviceArray<float> workspace(need + 4);
  auto launch = [&](int keys, float* ws, int64_t ws_floats) {
    return LaunchAttentionPagedSplit(nullptr, 1, n_heads, kv, {}, 1.0f, keys, ws, ws_floats, nullptr, nullptr);
  };
  EXPECT_EQ(cudaErrorInvalidValue, launch(max_keys, workspace.get(), need - 1));  // too small
  EXPECT_EQ(cudaErrorInvalidValue, launch(max_keys, nullptr, need));
  EXPECT_EQ(cudaErrorInvalidValue, launch(max_keys, workspace.get() + 1, need));  // misaligned
  EXPECT_EQ(cudaErrorInvalidValue, launch(max_keys, workspace.get(), -1));
  EXPECT_EQ(cudaErrorInvalidValue, launch(0, workspace.get(), need));
  kv.head_dim = 36;  // not a multiple of 8
  EXPECT_EQ(cudaErrorInvalidValue, launch(max_keys, workspace.get(), need));
  kv.head_dim = 64;
  EXPECT_EQ(cudaSuccess, LaunchAttentionPagedSplit(nullptr, 0, n_heads, kv, {}, 1.0f, max_keys, nullptr, 0, nullptr,
                                                   nullptr));  // no tokens: nothing to do
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

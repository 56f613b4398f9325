// The shard plan: which slice of every tensor each rank holds, the KV-head rules, the
// block-boundary rules for K-splits, and the bytes each rank keeps.
#include "sharding/shard_plan.h"

#include <map>

#include "gtest/gtest.h"
#include "model/arch/model_config.h"
#include "tests/unit/sharding/tp_test_util.h"

namespace bitfleet::sharding {
namespace {

using tp_testing::ModelSpec;

struct Loaded {
  std::unique_ptr<gguf::GgufFile> file;
  model::ModelConfig config;
};

Loaded Load(const ModelSpec& spec) {
  Loaded l;
  auto path = tp_testing::SynthModel(spec, ::testing::TempDir());
  EXPECT_TRUE(path.ok()) << path.status();
  if (!path.ok()) return l;
  auto file = gguf::GgufFile::Open(*path);
  EXPECT_TRUE(file.ok()) << file.status();
  l.file = std::move(file).value();
  l.config = *model::ReadModelConfig(*l.file);
  return l;
}

std::vector<std::vector<uint32_t>> KvSlots(const ShardPlan& plan) {
  std::vector<std::vector<uint32_t>> out;
  for (int r = 0; r < plan.size(); ++r) out.push_back(plan.rank(r).kv_heads);
  return out;
}

TEST(ShardPlanTest, BalancedRangesCoverEverythingOnWholeGranules) {
  EXPECT_EQ(BalancedRange(1024, 256, 4, 0), (Range{0, 256}));
  EXPECT_EQ(BalancedRange(1024, 256, 4, 3), (Range{768, 1024}));
  // 3 blocks over 2 ranks: one rank gets two.
  EXPECT_EQ(BalancedRange(768, 256, 2, 0), (Range{0, 256}));
  EXPECT_EQ(BalancedRange(768, 256, 2, 1), (Range{256, 768}));
  uint64_t next = 0;
  for (int r = 0; r < 7; ++r) {
    const Range range = BalancedRange(1000, 1, 7, r);
    EXPECT_EQ(range.begin, next);
    EXPECT_GE(range.size(), 142u);
    next = range.end;
  }
  EXPECT_EQ(next, 1000u);
}

TEST(ShardPlanTest, OneRankHoldsEveryTensorWhole) {
  Loaded l = Load(tp_testing::TinySpec("bitnet", DType::kQ8_0));
  auto plan = ShardPlan::Create(l.config, *l.file, 1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const RankShard& shard = plan->rank(0);
  uint64_t file_bytes = 0;
  for (const gguf::TensorInfo& t : l.file->tensors()) file_bytes += t.size_bytes;
  for (const TensorSlice& t : shard.tensors) {
    EXPECT_TRUE(t.whole()) << t.name;
    EXPECT_EQ(t.role, TensorRole::kReplicated) << t.name;
  }
  EXPECT_EQ(shard.split_bytes(), 0u);
  EXPECT_EQ(shard.replicated_bytes(), file_bytes);  // every tensor of the file, once
  EXPECT_EQ(shard.kv_heads, (std::vector<uint32_t>{0, 1}));
}

TEST(ShardPlanTest, SplitsHeadsFfnAndVocabAtTp2) {
  Loaded l = Load(tp_testing::TinySpec("llama", DType::kF32));
  auto plan = ShardPlan::Create(l.config, *l.file, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(KvSlots(*plan), (std::vector<std::vector<uint32_t>>{{0}, {1}}));
  const uint64_t hd = l.config.head_dim;
  for (int r = 0; r < 2; ++r) {
    const RankShard& s = plan->rank(r);
    EXPECT_TRUE(s.kv_split);
    EXPECT_EQ(s.heads, (Range{2ull * r, 2ull * r + 2}));
    EXPECT_EQ(s.ffn, (Range{512ull * r, 512ull * r + 512}));
    EXPECT_EQ(s.vocab, (Range{512ull * r, 512ull * r + 512}));
    const TensorSlice* q = s.Find("blk.1.attn_q.weight");
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(q->role, TensorRole::kColumnParallel);
    EXPECT_EQ(q->row_ranges, (std::vector<Range>{{2 * r * hd, (2 * r + 2) * hd}}));
    EXPECT_EQ(q->col_range, (Range{0, 256}));
    const TensorSlice* k = s.Find("blk.0.attn_k.weight");
    EXPECT_EQ(k->row_ranges, (std::vector<Range>{{r * hd, (r + 1) * hd}}));
    const TensorSlice* o = s.Find("blk.0.attn_output.weight");
    EXPECT_EQ(o->role, TensorRole::kRowParallel);
    EXPECT_EQ(o->row_ranges, (std::vector<Range>{{0, 256}}));
    EXPECT_EQ(o->col_range, (Range{2 * r * hd, (2 * r + 2) * hd}));
    EXPECT_EQ(s.Find("blk.0.ffn_down.weight")->col_range, s.ffn);
    EXPECT_EQ(s.Find("blk.0.ffn_gate.weight")->row_ranges, (std::vector<Range>{s.ffn}));
    EXPECT_EQ(s.Find("token_embd.weight")->role, TensorRole::kVocabParallel);
    EXPECT_EQ(s.Find("output.weight")->row_ranges, (std::vector<Range>{s.vocab}));
    EXPECT_EQ(s.Find("blk.0.attn_norm.weight")->role, TensorRole::kReplicated);
  }
  // Split tensors are divided exactly (float rows); the replicated part is the same on both.
  uint64_t split_total = 0;
  std::map<std::string, uint64_t> whole;
  for (const gguf::TensorInfo& t : l.file->tensors()) whole[t.name] = t.size_bytes;
  for (const TensorSlice& t : plan->rank(0).tensors) {
    if (t.role != TensorRole::kReplicated) split_total += whole[t.name];
  }
  EXPECT_EQ(plan->rank(0).split_bytes() + plan->rank(1).split_bytes(), split_total);
  EXPECT_EQ(plan->rank(0).replicated_bytes(), plan->rank(1).replicated_bytes());
  EXPECT_EQ(plan->max_vocab_slice(), 512u);
}

TEST(ShardPlanTest, KvHeadsReplicateWhenTheyDoNotDivide) {
  // Tiny: 4 query heads over 2 KV heads at TP=4: each rank's one head reads one KV head.
  Loaded tiny = Load(tp_testing::TinySpec("llama", DType::kF32));
  auto plan = ShardPlan::Create(tiny.config, *tiny.file, 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(KvSlots(*plan), (std::vector<std::vector<uint32_t>>{{0}, {0}, {1}, {1}}));
  EXPECT_FALSE(plan->rank(0).kv_split);

  // 12 heads over 4 KV heads at TP=3: rank 0's heads read KV heads 0,0,0,1, not a uniform
  // grouping, so it keeps one KV slot per query head (the V rows come out in that order);
  // rank 1's heads read 1,1,2,2: two slots of two heads each.
  Loaded twelve = Load(tp_testing::SpecFor("llama", DType::kF32, 3));
  auto plan3 = ShardPlan::Create(twelve.config, *twelve.file, 3);
  ASSERT_TRUE(plan3.ok()) << plan3.status();
  EXPECT_EQ(KvSlots(*plan3),
            (std::vector<std::vector<uint32_t>>{{0, 0, 0, 1}, {1, 2}, {2, 3, 3, 3}}));
  const uint64_t hd = twelve.config.head_dim;
  EXPECT_EQ(plan3->rank(0).Find("blk.0.attn_v.weight")->row_ranges,
            (std::vector<Range>{{0, hd}, {0, hd}, {0, 2 * hd}}));
  EXPECT_EQ(plan3->rank(0).Find("blk.0.attn_v.weight")->local_rows(), 4 * hd);

  // 6 heads over 2 KV heads at TP=3: rank 1's heads 2,3 read KV heads 0,1 — uniform.
  ModelSpec six = tp_testing::SpecFor("llama", DType::kF32, 3);
  six.n_head = 6;
  six.n_head_kv = 2;
  Loaded l6 = Load(six);
  auto plan6 = ShardPlan::Create(l6.config, *l6.file, 3);
  ASSERT_TRUE(plan6.ok()) << plan6.status();
  EXPECT_EQ(KvSlots(*plan6), (std::vector<std::vector<uint32_t>>{{0}, {0, 1}, {1}}));
}

TEST(ShardPlanTest, RefusesSplitsOffBlockBoundariesNamingTheTensor) {
  // Tiny bitnet TQ2_0 at TP=2: attn_output's 256 columns would split into 128 per rank.
  Loaded tq = Load(tp_testing::TinySpec("bitnet", DType::kTQ2_0));
  auto plan = ShardPlan::Create(tq.config, *tq.file, 2);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("blk.0.attn_output.weight"), absl::string_view::npos) << plan.status();
  EXPECT_NE(plan.status().message().find("256-element blocks"), absl::string_view::npos) << plan.status();
  // The same model in Q4_0 (32-element blocks) splits.
  Loaded q4 = Load(tp_testing::TinySpec("bitnet", DType::kQ4_0));
  EXPECT_TRUE(ShardPlan::Create(q4.config, *q4.file, 4).ok());

  // Heads that do not divide.
  auto three = ShardPlan::Create(q4.config, *q4.file, 3);
  ASSERT_FALSE(three.ok());
  EXPECT_NE(three.status().message().find("query heads do not divide"), absl::string_view::npos) << three.status();

  // An FFN of one 256-block cannot give two ranks a block each.
  ModelSpec narrow = tp_testing::SpecFor("bitnet", DType::kTQ1_0, 2);
  narrow.n_ff = 256;
  Loaded ln = Load(narrow);
  auto ffn = ShardPlan::Create(ln.config, *ln.file, 2);
  ASSERT_FALSE(ffn.ok());
  EXPECT_NE(ffn.status().message().find("blk.0.ffn_down.weight"), absl::string_view::npos) << ffn.status();

  EXPECT_FALSE(ShardPlan::Create(q4.config, *q4.file, 0).ok());
}

TEST(ShardPlanTest, TernaryShardsCarryTheI2sScaleTail) {
  Loaded l = Load(tp_testing::SpecFor("bitnet", DType::kI2_S, 2));
  auto plan = ShardPlan::Create(l.config, *l.file, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const TensorSlice* down = plan->rank(1).Find("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->type, DType::kI2_S);
  // 1024 rows × 512 columns at 2 bits, plus the 32-byte scale tail.
  EXPECT_EQ(down->file_bytes(), 1024u * 512 / 4 + 32);
  EXPECT_EQ(plan->rank(1).Find("blk.0.ffn_sub_norm.weight")->col_range, (Range{512, 1024}));
  EXPECT_EQ(plan->rank(1).Find("blk.0.attn_sub_norm.weight")->col_range, (Range{512, 1024}));
}

}  // namespace
}  // namespace bitfleet::sharding

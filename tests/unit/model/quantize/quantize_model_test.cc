#include "model/quantize/quantize_model.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/arch/model_config.h"
#include "model/quantize/encode.h"
#include "tests/unit/model/synth/synth_test_util.h"

namespace bitfleet::quantize {
namespace {

using synth::testing::BitwiseEqual;
using synth::testing::Decode;
using synth::testing::ModelBuffer;
using synth::testing::SynthToBuffer;
using synth::testing::TinyOptions;

// Converts a parsed model in memory; `summary` receives the outcome.
StatusOr<ModelBuffer> Convert(const gguf::GgufFile& input, const QuantizeOptions& options,
                              QuantizeSummary* summary = nullptr) {
  QuantizeSummary local;
  QuantizeSummary* out = summary != nullptr ? summary : &local;
  BF_ASSIGN_OR_RETURN(gguf::GgufWriter writer, BuildQuantizeWriter(input, options, out));
  BF_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, writer.WriteBuffer());
  return synth::testing::Parse(std::move(bytes));
}

QuantizeOptions To(DType type) {
  QuantizeOptions options;
  options.type = type;
  return options;
}

void ExpectLoads(const gguf::GgufFile& file) {
  auto config = model::ReadModelConfig(file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(model::ValidateTensors(*config, file).ok()) << model::ValidateTensors(*config, file);
}

bool IsMatrix(const gguf::TensorInfo& t) {
  return t.shape.size() == 2 && t.name != "token_embd.weight" && t.name != "output.weight";
}

TEST(QuantizeModelTest, TernaryRoundTripIsBitExact) {
  auto original = SynthToBuffer(TinyOptions("bitnet", DType::kTQ2_0));
  ASSERT_TRUE(original.ok()) << original.status();
  auto tq1 = Convert(*original->file, To(DType::kTQ1_0));
  ASSERT_TRUE(tq1.ok()) << tq1.status();
  auto i2s = Convert(*tq1->file, To(DType::kI2_S));
  ASSERT_TRUE(i2s.ok()) << i2s.status();
  QuantizeSummary summary;
  auto back = Convert(*i2s->file, To(DType::kTQ2_0), &summary);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(summary.absmean_ternarized, 0u);

  int matrices = 0;
  for (const gguf::TensorInfo& t : original->file->tensors()) {
    SCOPED_TRACE(t.name);
    const std::vector<float> want = Decode(*original->file, t);
    for (const ModelBuffer* m : {&*tq1, &*i2s, &*back}) {
      EXPECT_TRUE(BitwiseEqual(Decode(*m->file, t.name), want));
    }
    if (IsMatrix(t)) {
      ++matrices;
      EXPECT_EQ(tq1->file->FindTensor(t.name)->type, DType::kTQ1_0);
      EXPECT_EQ(i2s->file->FindTensor(t.name)->type, DType::kI2_S);
    }
    // Back in TQ2_0, every tensor has its original bytes.
    const gguf::TensorInfo* b = back->file->FindTensor(t.name);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->type, t.type);
    const auto x = original->file->TensorData(t);
    const auto y = back->file->TensorData(*b);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end()));
  }
  EXPECT_EQ(matrices, 14);
  ExpectLoads(*tq1->file);
  ExpectLoads(*i2s->file);
  ExpectLoads(*back->file);
  EXPECT_EQ(*i2s->file->GetU32("general.file_type"), 40u);
  EXPECT_EQ(*back->file->GetU32("general.file_type"), 37u);
}

// Q4_0 error bound per 32-block: the step is d = |max| / 8, so rounding errs by at most d / 2,
// and the clamp at code 15 (the opposite extreme of the block) by at most d; d is stored as
// fp16 (relative error <= 2^-11), which the clamped value sees 7 times: factor 1 + 7/2048.
void ExpectQ40Error(const std::vector<float>& want, const std::vector<float>& got, const std::string& name) {
  ASSERT_EQ(want.size(), got.size());
  double err_sq = 0, sig_sq = 0;
  for (size_t b = 0; b < want.size(); b += 32) {
    float amax = 0;
    for (size_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(want[i]));
    const float bound = amax / 8 * (1.0f + 7.0f / 2048) + 1e-7f;
    for (size_t i = b; i < b + 32; ++i) {
      ASSERT_LE(std::fabs(got[i] - want[i]), bound) << name << " element " << i;
      err_sq += double(got[i] - want[i]) * (got[i] - want[i]);
      sig_sq += double{want[i]} * want[i];
    }
  }
  // Gaussian weights in Q4_0: relative RMS error ~ 0.1.
  EXPECT_LT(std::sqrt(err_sq / sig_sq), 0.15) << name;
}

TEST(QuantizeModelTest, LlamaF32ToQ40KeepsNormsAndStaysWithinBudget) {
  auto original = SynthToBuffer(TinyOptions("llama", DType::kF32));
  ASSERT_TRUE(original.ok()) << original.status();
  QuantizeSummary summary;
  auto q4 = Convert(*original->file, To(DType::kQ4_0), &summary);
  ASSERT_TRUE(q4.ok()) << q4.status();
  ExpectLoads(*q4->file);
  EXPECT_EQ(*q4->file->GetU32("general.file_type"), 2u);
  EXPECT_EQ(summary.fallbacks, 0u);
  for (const gguf::TensorInfo& t : original->file->tensors()) {
    const gguf::TensorInfo* out = q4->file->FindTensor(t.name);
    ASSERT_NE(out, nullptr) << t.name;
    if (t.shape.size() == 1) {
      EXPECT_EQ(out->type, DType::kF32) << t.name;
      EXPECT_TRUE(BitwiseEqual(Decode(*q4->file, *out), Decode(*original->file, t))) << t.name;
    } else {
      EXPECT_EQ(out->type, DType::kQ4_0) << t.name;  // embedding and LM head too (non-ternary type)
      ExpectQ40Error(Decode(*original->file, t), Decode(*q4->file, *out), t.name);
    }
  }
  // Metadata is carried over.
  EXPECT_EQ(*q4->file->GetStringArray("tokenizer.ggml.tokens"),
            *original->file->GetStringArray("tokenizer.ggml.tokens"));
  EXPECT_EQ(*q4->file->GetString("general.name"), *original->file->GetString("general.name"));
}

TEST(QuantizeModelTest, TernarizingANonTernaryModelUsesAbsmean) {
  auto original = SynthToBuffer(TinyOptions("llama", DType::kF16));
  ASSERT_TRUE(original.ok());
  QuantizeSummary summary;
  auto tq = Convert(*original->file, To(DType::kTQ2_0), &summary);
  ASSERT_TRUE(tq.ok()) << tq.status();
  ExpectLoads(*tq->file);
  EXPECT_EQ(summary.absmean_ternarized, 14u);  // every projection, and nothing else
  for (const TensorOutcome& t : summary.tensors) {
    const gguf::TensorInfo* info = tq->file->FindTensor(t.name);
    if (IsMatrix(*info)) {
      EXPECT_TRUE(t.absmean_ternarized) << t.name;
      EXPECT_EQ(t.to, DType::kTQ2_0);
      EXPECT_GT(SingleTernaryScale(Decode(*tq->file, *info)).value_or(0.0f), 0.0f) << t.name;
    } else if (info->shape.size() == 2) {
      // Embedding and LM head are not ternarized: Q8_0 (type_policy.h), quantized from F16.
      EXPECT_EQ(t.to, DType::kQ8_0) << t.name;
      EXPECT_FALSE(t.copied) << t.name;
      EXPECT_FALSE(t.absmean_ternarized) << t.name;
    } else {
      EXPECT_EQ(t.to, DType::kF32) << t.name;
    }
  }
}

TEST(QuantizeModelTest, RowsThatAreNotWholeBlocksFallBackToF16) {
  synth::SynthOptions options = TinyOptions("bitnet", DType::kF32);
  options.config.n_embd = 96;
  options.config.n_head = 3;
  options.config.n_head_kv = 1;
  options.config.head_dim = 32;
  options.config.rope_dim = 32;
  auto original = SynthToBuffer(options);
  ASSERT_TRUE(original.ok()) << original.status();
  QuantizeSummary summary;
  auto tq = Convert(*original->file, To(DType::kTQ2_0), &summary);
  ASSERT_TRUE(tq.ok()) << tq.status();
  ExpectLoads(*tq->file);
  size_t fallbacks = 0;
  for (const TensorOutcome& t : summary.tensors) {
    if (!t.fallback_reason.empty()) {
      ++fallbacks;
      EXPECT_EQ(t.to, kFallbackType) << t.name;
      EXPECT_EQ(t.fallback_reason, "row of 96 elements is not a multiple of the tq2_0 block (256)");
    }
    if (t.name.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(t.to, DType::kTQ2_0);
    }
    // Ternary matrices and norms are exact either way: the values survive F16 and TQ2_0.
    if (t.name == "token_embd.weight") {  // Gaussian F32 -> Q8_0 (type_policy.h)
      EXPECT_EQ(t.to, DType::kQ8_0);
      continue;
    }
    EXPECT_TRUE(BitwiseEqual(Decode(*tq->file, t.name), Decode(*original->file, t.name))) << t.name;
  }
  EXPECT_EQ(fallbacks, 12u);  // q, k, v, output, gate, up in 2 layers
  EXPECT_EQ(summary.fallbacks, 12u);
  EXPECT_EQ(summary.absmean_ternarized, 0u);
}

TEST(QuantizeModelTest, EmbeddingTypeCanBeChosenOrKept) {
  auto original = SynthToBuffer(TinyOptions("llama", DType::kF32));
  ASSERT_TRUE(original.ok());
  QuantizeOptions keep = To(DType::kQ8_0);
  keep.keep_embeddings = true;
  auto kept = Convert(*original->file, keep);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->file->FindTensor("token_embd.weight")->type, DType::kF32);
  EXPECT_EQ(kept->file->FindTensor("output.weight")->type, DType::kF32);
  EXPECT_EQ(kept->file->FindTensor("blk.0.attn_q.weight")->type, DType::kQ8_0);

  // Ternary weights default to Q8_0 embeddings; a choice overrides that.
  auto by_default = Convert(*original->file, To(DType::kTQ2_0));
  ASSERT_TRUE(by_default.ok());
  EXPECT_EQ(by_default->file->FindTensor("token_embd.weight")->type, DType::kQ8_0);
  EXPECT_EQ(by_default->file->FindTensor("output.weight")->type, DType::kQ8_0);
  QuantizeOptions chosen = To(DType::kTQ2_0);
  chosen.embedding_type = DType::kF16;
  auto f16 = Convert(*original->file, chosen);
  ASSERT_TRUE(f16.ok());
  EXPECT_EQ(f16->file->FindTensor("token_embd.weight")->type, DType::kF16);
  EXPECT_EQ(f16->file->FindTensor("output.weight")->type, DType::kF16);
}

class QuantizeFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("bitfleet_quantize_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

TEST_F(QuantizeFileTest, WritesAFileAndRefusesToOverwriteItsInput) {
  const std::string in = Path("in.gguf");
  const std::string out = Path("out.gguf");
  auto stats = synth::SynthesizeModel(TinyOptions("bitnet", DType::kTQ2_0), in);
  ASSERT_TRUE(stats.ok()) << stats.status();
  auto summary = QuantizeModel(in, out, To(DType::kI2_S));
  ASSERT_TRUE(summary.ok()) << summary.status();
  auto file = gguf::GgufFile::Open(out);
  ASSERT_TRUE(file.ok()) << file.status();
  ExpectLoads(**file);

  auto same = QuantizeModel(in, in, To(DType::kI2_S));
  EXPECT_EQ(same.status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = QuantizeModel(Path("missing.gguf"), out, To(DType::kI2_S));
  EXPECT_FALSE(missing.ok());
  // Only the two model files: no temporary left behind.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 2u);
}

}  // namespace
}  // namespace bitfleet::quantize

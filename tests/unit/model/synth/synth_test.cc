#include "model/synth/synth.h"

#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "gtest/gtest.h"
#include "model/arch/model_config.h"
#include "model/quantize/encode.h"
#include "model/quantize/type_policy.h"
#include "model/synth/presets.h"
#include "model/synth/random.h"
#include "tests/unit/model/synth/synth_test_util.h"

namespace bitfleet::synth {
namespace {

using testing::Decode;
using testing::SynthToBuffer;
using testing::TinyOptions;

constexpr DType kAllTypes[] = {DType::kF32,  DType::kF16,   DType::kBF16,  DType::kQ8_0, DType::kQ4_0,
                               DType::kQ4_1, DType::kTQ1_0, DType::kTQ2_0, DType::kI2_S};
const char* const kArchs[] = {"llama", "bitnet", "bitnet-b1.58"};

bool IsMatrix(const gguf::TensorInfo& t) {
  return t.shape.size() == 2 && t.name != model::tensor_names::kTokenEmbd && t.name != model::tensor_names::kOutput;
}

TEST(SynthTest, TinyModelsOfEveryArchAndTypeLoad) {
  for (const char* arch : kArchs) {
    for (DType type : kAllTypes) {
      SCOPED_TRACE(std::string(arch) + " " + DTypeName(type));
      const SynthOptions options = TinyOptions(arch, type);
      auto model = SynthToBuffer(options);
      ASSERT_TRUE(model.ok()) << model.status();
      const gguf::GgufFile& file = *model->file;

      auto config = model::ReadModelConfig(file);
      ASSERT_TRUE(config.ok()) << config.status();
      EXPECT_TRUE(model::ValidateTensors(*config, file).ok()) << model::ValidateTensors(*config, file);
      const model::ModelConfig& want = options.config;
      EXPECT_EQ(config->arch, want.arch);
      EXPECT_EQ(config->arch_name, want.arch_name);
      EXPECT_EQ(config->n_vocab, want.n_vocab);
      EXPECT_EQ(config->n_embd, want.n_embd);
      EXPECT_EQ(config->n_layer, want.n_layer);
      EXPECT_EQ(config->n_head, want.n_head);
      EXPECT_EQ(config->n_head_kv, want.n_head_kv);
      EXPECT_EQ(config->n_ff, want.n_ff);
      EXPECT_EQ(config->head_dim, want.head_dim);
      EXPECT_EQ(config->activation, want.activation);
      EXPECT_EQ(config->tied_embeddings, want.tied_embeddings);
      EXPECT_EQ(config->rope_type, want.rope_type);
      EXPECT_EQ(model::ParameterCount(*config), model::ParameterCount(want));

      EXPECT_EQ(*file.GetU32("general.file_type"), quantize::FileTypeFor(type));
      EXPECT_EQ(file.GetStringArray("tokenizer.ggml.tokens")->size(), want.n_vocab);

      const DType embedding_type = IsTernary(type) ? DType::kQ8_0 : type;
      for (const gguf::TensorInfo& t : file.tensors()) {
        if (t.shape.size() == 1) {
          EXPECT_EQ(t.type, DType::kF32) << t.name;
        } else if (IsMatrix(t)) {
          EXPECT_EQ(t.type, type) << t.name;
        } else {
          EXPECT_EQ(t.type, embedding_type) << t.name;
        }
      }
    }
  }
}

TEST(SynthTest, SameSeedSameBytesOtherSeedOtherBytes) {
  for (DType type : {DType::kTQ2_0, DType::kI2_S, DType::kQ4_0}) {
    auto a = SynthToBuffer(TinyOptions("bitnet", type, 7));
    auto b = SynthToBuffer(TinyOptions("bitnet", type, 7));
    auto c = SynthToBuffer(TinyOptions("bitnet", type, 8));
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(a->bytes, b->bytes);
    ASSERT_EQ(a->bytes.size(), c->bytes.size());  // same shapes, other values
    EXPECT_NE(a->bytes, c->bytes);
    // Every weight tensor differs, not only one.
    for (const gguf::TensorInfo& t : a->file->tensors()) {
      EXPECT_FALSE(testing::BitwiseEqual(Decode(*a->file, t), Decode(*c->file, t.name))) << t.name;
    }
  }
}

// The generator is a fixed function: these values must never change on any machine, or every
// synthetic model (and every expected output recorded from one) changes with it.
TEST(SynthTest, RandomStreamsArePinned) {
  EXPECT_EQ(Mix64(0), 0u);
  EXPECT_EQ(Draw(0, 0), 0xE220A8397B1DCDAFull);  // SplitMix64's first output for seed 0
  EXPECT_EQ(Draw(0, 1), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(HashName(""), 0xCBF29CE484222325ull);
  EXPECT_EQ(HashName("a"), 0xAF63DC4C8601EC8Cull);

  WeightSpec gaussian{WeightKind::kGaussian, StreamKey(42, "blk.0.attn_q.weight"), 0.05f, 0.0f};
  std::vector<float> values(4096);
  GenerateWeights(gaussian, 0, values);
  double sum = 0, sum_sq = 0;
  for (float v : values) {
    sum += v;
    sum_sq += double{v} * v;
  }
  const double mean = sum / values.size();
  EXPECT_NEAR(mean, 0.0, 0.005);
  EXPECT_NEAR(std::sqrt(sum_sq / values.size() - mean * mean), 0.05, 0.003);
}

// FNV-1a over the bit patterns of `values`.
uint64_t Fingerprint(const std::vector<float>& values) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    for (int k = 0; k < 4; ++k) {
      h ^= (bits >> (8 * k)) & 0xFF;
      h *= 0x100000001B3ull;
    }
  }
  return h;
}

// The weights themselves, for each kind of tensor, pinned bit for bit.
TEST(SynthTest, GeneratedWeightsArePinned) {
  std::vector<float> values(10000);
  const uint64_t key = StreamKey(1234, "blk.0.ffn_up.weight");
  GenerateWeights({WeightKind::kNorm, key, 0.0f, 0.0f}, 0, values);
  EXPECT_EQ(Fingerprint(values), 0x18b3019b1a3d8337ull);
  GenerateWeights({WeightKind::kGaussian, key, 0.02f, 0.0f}, 0, values);
  EXPECT_EQ(Fingerprint(values), 0x530a6319b28b7a62ull);
  const float scale = TernaryScale(1.0 / 16, key);
  EXPECT_EQ(scale, 0.089111328125f);  // fp16 0x2db4
  GenerateWeights({WeightKind::kTernary, key, 0.0f, scale}, 0, values);
  EXPECT_EQ(Fingerprint(values), 0xf584e9db843a5c8cull);
}

TEST(SynthTest, RowRangesAreIndependentOfChunking) {
  for (WeightKind kind : {WeightKind::kNorm, WeightKind::kGaussian, WeightKind::kTernary}) {
    WeightSpec spec{kind, StreamKey(3, "t"), 0.1f, 0.25f};
    std::vector<float> whole(1000), part(300);
    GenerateWeights(spec, 0, whole);
    GenerateWeights(spec, 500, part);
    EXPECT_TRUE(std::equal(part.begin(), part.end(), whole.begin() + 500));
  }
}

TEST(SynthTest, NormWeightsAreNearOneAndExactInHalf) {
  WeightSpec spec{WeightKind::kNorm, StreamKey(1, "n"), 0.0f, 0.0f};
  std::vector<float> values(2000);
  GenerateWeights(spec, 0, values);
  std::set<float> distinct(values.begin(), values.end());
  EXPECT_GT(distinct.size(), 100u);
  for (float v : values) {
    EXPECT_GE(v, 1.0f - 64.0f / 1024.0f);
    EXPECT_LE(v, 1.0f + 64.0f / 1024.0f);
    EXPECT_EQ(HalfToFloat(FloatToHalf(v)), v);
  }
}

TEST(SynthTest, BitnetTq20MatricesAreTwoPointOhSixTwoFiveBitsPerWeight) {
  auto model = SynthToBuffer(TinyOptions("bitnet", DType::kTQ2_0));
  ASSERT_TRUE(model.ok()) << model.status();
  int matrices = 0;
  for (const gguf::TensorInfo& t : model->file->tensors()) {
    if (!IsMatrix(t)) continue;
    ++matrices;
    EXPECT_EQ(t.type, DType::kTQ2_0);
    EXPECT_EQ(static_cast<double>(t.size_bytes) * 8 / t.elements(), 2.0625) << t.name;
  }
  EXPECT_EQ(matrices, 14);  // 7 projections x 2 layers
}

// Bitnet matrices are ternary with one fp16 scale per tensor, so every type that can hold them
// exactly decodes to the generated values bit for bit.
TEST(SynthTest, BitnetMatricesAreExactTernaryInLosslessTypes) {
  const SynthOptions base = TinyOptions("bitnet", DType::kF32);
  auto plan = PlanSynthTensors(base);
  ASSERT_TRUE(plan.ok());
  for (DType type : {DType::kF32, DType::kF16, DType::kTQ1_0, DType::kTQ2_0, DType::kI2_S}) {
    SCOPED_TRACE(DTypeName(type));
    auto model = SynthToBuffer(TinyOptions("bitnet", type));
    ASSERT_TRUE(model.ok());
    std::set<float> scales;
    for (const SynthTensor& t : *plan) {
      if (t.weights.kind != WeightKind::kTernary) continue;
      const float s = t.weights.scale;
      EXPECT_EQ(HalfToFloat(FloatToHalf(s)), s) << t.name;
      scales.insert(s);
      std::vector<float> want(t.shape[0] * t.shape[1]);
      GenerateWeights(t.weights, 0, want);
      const std::vector<float> got = Decode(*model->file, t.name);
      EXPECT_TRUE(testing::BitwiseEqual(got, want)) << t.name;
      size_t zeros = 0;
      for (float v : got) zeros += v == 0.0f;
      EXPECT_NEAR(static_cast<double>(zeros) / got.size(), 1.0 / 3, 0.02) << t.name;
    }
    EXPECT_GT(scales.size(), 3u);  // scales vary per tensor
  }
}

TEST(SynthTest, RowsThatAreNotWholeBlocksFallBackToF16) {
  SynthOptions options = TinyOptions("bitnet", DType::kTQ2_0);
  options.config.n_embd = 96;
  options.config.n_head = 3;
  options.config.n_head_kv = 1;
  options.config.head_dim = 32;
  options.config.rope_dim = 32;
  auto model = SynthToBuffer(options);
  ASSERT_TRUE(model.ok()) << model.status();
  auto config = model::ReadModelConfig(*model->file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(model::ValidateTensors(*config, *model->file).ok());
  for (const gguf::TensorInfo& t : model->file->tensors()) {
    if (!IsMatrix(t)) continue;
    // ffn_down's rows are n_ff = 1024 long: whole TQ2_0 blocks. The rest are 96 long.
    const bool down = t.name.find("ffn_down") != std::string::npos;
    EXPECT_EQ(t.type, down ? DType::kTQ2_0 : quantize::kFallbackType) << t.name;
  }
  auto plan = PlanSynthTensors(options);
  ASSERT_TRUE(plan.ok());
  for (const SynthTensor& t : *plan) {
    if (t.type == quantize::kFallbackType && t.shape.size() == 2 && t.name != "token_embd.weight") {
      EXPECT_NE(t.fallback_reason.find("not a multiple of the tq2_0 block (256)"), std::string::npos) << t.name;
    }
  }
  // Fallback weights are still the exact ternary values.
  const std::vector<float> q = Decode(*model->file, "blk.0.attn_q.weight");
  EXPECT_GT(quantize::SingleTernaryScale(q).value_or(0.0f), 0.0f);
}

TEST(SynthTest, InvalidConfigsAreRejected) {
  SynthOptions options = TinyOptions("llama", DType::kF16);
  options.config.n_head_kv = 3;  // does not divide 4 heads
  EXPECT_EQ(BuildSynthWriter(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = TinyOptions("llama", DType::kF16);
  options.config.n_vocab = 100;  // cannot hold the byte tokens
  EXPECT_EQ(BuildSynthWriter(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = TinyOptions("llama", DType::kF16);
  options.config.n_embd = 250;  // not a multiple of 4 heads
  EXPECT_EQ(BuildSynthWriter(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SynthTest, NamesParseWithClearErrors) {
  EXPECT_EQ(*ParsePreset("SMALL"), Preset::kSmall);
  EXPECT_EQ(ParseSynthArch("bitnet-b1.58")->arch, model::Arch::kBitnet);
  auto preset = ParsePreset("huge");
  ASSERT_FALSE(preset.ok());
  EXPECT_EQ(std::string(preset.status().message()),
            "unknown preset 'huge' (expected tiny, small, medium or large)");
  auto arch = ParseSynthArch("gpt2");
  ASSERT_FALSE(arch.ok());
  EXPECT_EQ(std::string(arch.status().message()),
            "unknown architecture 'gpt2' (expected llama, bitnet, bitnet-b1.58 or qwen2)");
  auto type = quantize::ParseWeightType("q5_k");
  ASSERT_FALSE(type.ok());
  EXPECT_EQ(std::string(type.status().message()),
            "unknown weight type 'q5_k' (expected one of f32, f16, bf16, q8_0, q4_0, q4_1, tq1_0, tq2_0, i2_s)");
  EXPECT_FALSE(quantize::ParseWeightType("i8").ok());  // a GGUF type, but not a weight type
}

TEST(SynthTest, PresetsHaveTheDocumentedShapes) {
  const ArchChoice bitnet = *ParseSynthArch("bitnet-b1.58");
  const model::ModelConfig large = PresetConfig(bitnet, Preset::kLarge);
  EXPECT_EQ(large.n_embd, 2560u);
  EXPECT_EQ(large.n_layer, 30u);
  EXPECT_EQ(large.n_head, 20u);
  EXPECT_EQ(large.n_head_kv, 5u);
  EXPECT_EQ(large.n_ff, 6912u);
  EXPECT_EQ(large.n_vocab, 128256u);
  EXPECT_EQ(large.activation, model::Activation::kRelu2);
  EXPECT_TRUE(large.tied_embeddings);
  EXPECT_NEAR(model::ParameterCount(large) / 1e9, 2.41, 0.01);
  const model::ModelConfig medium = PresetConfig(bitnet, Preset::kMedium);
  EXPECT_EQ(medium.n_embd, 1536u);
  EXPECT_EQ(medium.n_layer, 24u);
  EXPECT_EQ(medium.n_ff, 4096u);
  EXPECT_NEAR(model::ParameterCount(medium) / 1e6, 729, 1);
  const model::ModelConfig small = PresetConfig(bitnet, Preset::kSmall);
  EXPECT_NEAR(model::ParameterCount(small) / 1e6, 104, 1);
  for (Preset p : {Preset::kTiny, Preset::kSmall, Preset::kMedium, Preset::kLarge}) {
    for (const char* arch : kArchs) {
      EXPECT_TRUE(CheckSynthConfig(PresetConfig(*ParseSynthArch(arch), p)).ok()) << PresetName(p) << " " << arch;
    }
  }
  // TP tests split heads 2 and 4 ways; the small preset splits every matrix into whole 256 blocks.
  const model::ModelConfig tiny = PresetConfig(bitnet, Preset::kTiny);
  EXPECT_EQ(tiny.n_head % 4, 0u);
  EXPECT_EQ(tiny.n_head_kv % 2, 0u);
  EXPECT_EQ(small.n_embd / 4 % 256, 0u);
  EXPECT_EQ(small.n_ff / 4 % 256, 0u);
}

TEST(SynthTest, ActivationPicksTheBitnetArchitectureName) {
  model::ModelConfig c = PresetConfig(*ParseSynthArch("bitnet"), Preset::kTiny);
  EXPECT_EQ(c.activation, model::Activation::kSilu);
  EXPECT_TRUE(SetActivation(c, model::Activation::kRelu2));
  EXPECT_EQ(c.arch_name, "bitnet-b1.58");
  EXPECT_FALSE(SetActivation(c, model::Activation::kRelu2));
  model::ModelConfig llama = PresetConfig(*ParseSynthArch("llama"), Preset::kTiny);
  EXPECT_FALSE(SetActivation(llama, model::Activation::kRelu2));
  EXPECT_EQ(llama.arch_name, "llama");
}

}  // namespace
}  // namespace bitfleet::synth

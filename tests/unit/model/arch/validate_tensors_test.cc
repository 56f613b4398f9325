#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/arch/model_config.h"
#include "tests/unit/model/arch/model_file_builder.h"

namespace bitfleet::model {
namespace {

using testing::BuildModel;
using testing::BuiltFile;
using testing::TensorSpec;
using testing::TinyConfig;
namespace tn = tensor_names;

// Validates `built` against `config` and returns the error message ("" when valid).
std::string Problem(const ModelConfig& config, const BuiltFile& built) {
  if (built.file == nullptr) return "file did not build";
  Status status = ValidateTensors(config, *built.file);
  if (!status.ok()) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  }
  return std::string(status.message());
}

TEST(ValidateTensorsTest, CompleteModelsPass) {
  for (Arch arch : {Arch::kLlama, Arch::kBitnet, Arch::kQwen2}) {
    for (bool tied : {false, true}) {
      ModelConfig config = TinyConfig(arch);
      config.tied_embeddings = tied;
      EXPECT_EQ(Problem(config, BuildModel(config)), "");
    }
  }
}

// A config that did not come from the file (converters, synth) still cannot pair the
// embedding with a tokenizer of another size: shapes alone would pass here.
TEST(ValidateTensorsTest, TokenizerSizeMustMatchTheEmbedding) {
  const ModelConfig config = TinyConfig(Arch::kLlama);  // n_vocab 32
  const BuiltFile base = BuildModel(config);
  for (size_t n_tokens : {31, 33}) {
    SCOPED_TRACE(n_tokens);
    const BuiltFile built = testing::Rewrite(
        *base.file, {}, {{"tokenizer.ggml.tokens", gguf::Value::StringArray(std::vector<std::string>(n_tokens, "t"))}});
    const std::string problem = Problem(config, built);
    EXPECT_NE(problem.find("tokenizer has " + std::to_string(n_tokens) +
                           " tokens but the model's embedding has 32 rows"),
              std::string::npos)
        << problem;
  }
  const BuiltFile exact = testing::Rewrite(
      *base.file, {}, {{"tokenizer.ggml.tokens", gguf::Value::StringArray(std::vector<std::string>(32, "t"))}});
  EXPECT_EQ(Problem(config, exact), "");
}

TEST(ValidateTensorsTest, EveryExpectedTensorIsRequired) {
  for (Arch arch : {Arch::kLlama, Arch::kBitnet, Arch::kQwen2}) {
    ModelConfig config = TinyConfig(arch);
    for (const TensorSpec& spec : testing::ExpectedTensors(config)) {
      SCOPED_TRACE(spec.name);
      std::string problem = Problem(config, BuildModel(config, {spec.name}));
      EXPECT_NE(problem.find(spec.name), std::string::npos) << problem;
      EXPECT_NE(problem.find("missing"), std::string::npos) << problem;
    }
  }
}

TEST(ValidateTensorsTest, ShapeMismatchNamesTensorAndBothShapes) {
  ModelConfig config = TinyConfig(Arch::kLlama);
  // attn_k stored as if n_head_kv were 4 ([16, 16] instead of [16, 8]).
  const std::string name = tn::Layer(1, tn::kAttnK);
  std::string problem = Problem(config, BuildModel(config, {}, {{name, {16, 16}}}));
  EXPECT_NE(problem.find(name), std::string::npos) << problem;
  EXPECT_NE(problem.find("[16, 16]"), std::string::npos) << problem;
  EXPECT_NE(problem.find("[16, 8]"), std::string::npos) << problem;

  // Transposed ffn_down.
  const std::string down = tn::Layer(0, tn::kFfnDown);
  problem = Problem(config, BuildModel(config, {}, {{down, {16, 24}}}));
  EXPECT_NE(problem.find(down), std::string::npos) << problem;
  EXPECT_NE(problem.find("[24, 16]"), std::string::npos) << problem;
}

TEST(ValidateTensorsTest, TrailingUnitDimsMatchAsInGgml) {
  ModelConfig config = TinyConfig(Arch::kLlama);
  EXPECT_EQ(Problem(config, BuildModel(config, {}, {{tn::kOutputNorm, {16, 1}}})), "");
}

TEST(ValidateTensorsTest, UntiedConfigNeedsOutputAndTiedChecksItIfPresent) {
  ModelConfig config = TinyConfig(Arch::kLlama);
  std::string problem = Problem(config, BuildModel(config, {tn::kOutput}));
  EXPECT_NE(problem.find(tn::kOutput), std::string::npos) << problem;

  ModelConfig tied = config;
  tied.tied_embeddings = true;
  // A tied config with a wrongly shaped output.weight present is still an error.
  problem = Problem(tied, BuildModel(config, {}, {{tn::kOutput, {16, 31}}}));
  EXPECT_NE(problem.find(tn::kOutput), std::string::npos) << problem;
}

TEST(ValidateTensorsTest, TypesMustFitTheRole) {
  ModelConfig config = TinyConfig(Arch::kBitnet);
  const std::string norm = tn::Layer(0, tn::kFfnSubNorm);
  std::string problem = Problem(config, BuildModel(config, {}, {{norm, {24}, DType::kF16}}));
  EXPECT_NE(problem.find(norm), std::string::npos) << problem;
  EXPECT_NE(problem.find("f16"), std::string::npos) << problem;

  const std::string q = tn::Layer(0, tn::kAttnQ);
  problem = Problem(config, BuildModel(config, {}, {{q, {16, 16}, DType::kI32}}));
  EXPECT_NE(problem.find(q), std::string::npos) << problem;

  // Quantized and half-precision matrices are fine.
  EXPECT_EQ(Problem(config, BuildModel(config, {}, {{q, {16, 16}, DType::kF16}})), "");
}

TEST(ValidateTensorsTest, ProjectionScalesAreOptionalSingleF32) {
  ModelConfig config = TinyConfig(Arch::kBitnet);
  const std::string scale = tn::Layer(1, tn::ScaleOf(tn::kAttnQ));
  EXPECT_EQ(scale, "blk.1.attn_q.scale");
  {
    gguf::GgufWriter writer;
    testing::FillWriter(writer, config);
    testing::AddZeroTensor(writer, {scale, {1}});
    EXPECT_EQ(Problem(config, testing::Build(writer)), "");
  }
  {
    gguf::GgufWriter writer;
    testing::FillWriter(writer, config);
    testing::AddZeroTensor(writer, {scale, {2}});
    std::string problem = Problem(config, testing::Build(writer));
    EXPECT_NE(problem.find(scale), std::string::npos) << problem;
  }
}

TEST(ValidateTensorsTest, SubNormsOnlyForBitnet) {
  ModelConfig llama = TinyConfig(Arch::kLlama);
  ModelConfig bitnet = TinyConfig(Arch::kBitnet);
  // A llama file lacks sub norms: fine for llama, an error for bitnet.
  BuiltFile llama_file = BuildModel(llama);
  EXPECT_EQ(Problem(llama, llama_file), "");
  std::string problem = Problem(bitnet, llama_file);
  EXPECT_NE(problem.find("attn_sub_norm"), std::string::npos) << problem;
}

TEST(ValidateTensorsTest, RopeFreqsIsRefused) {
  ModelConfig config = TinyConfig(Arch::kLlama);
  gguf::GgufWriter writer;
  testing::FillWriter(writer, config);
  testing::AddZeroTensor(writer, {tn::kRopeFreqs, {2}});
  std::string problem = Problem(config, testing::Build(writer));
  EXPECT_NE(problem.find(tn::kRopeFreqs), std::string::npos) << problem;
}

}  // namespace
}  // namespace bitfleet::model

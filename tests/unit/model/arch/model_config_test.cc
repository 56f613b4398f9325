#include "model/arch/model_config.h"

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

#include "gtest/gtest.h"
#include "tests/unit/model/arch/model_file_builder.h"

namespace bitfleet::model {
namespace {

using testing::BuildModel;
using testing::BuiltFile;
using testing::Rewrite;
using testing::TinyConfig;
using gguf::KeyValue;
using gguf::Value;

void ExpectSameConfig(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.arch_name, b.arch_name);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.n_vocab, b.n_vocab);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.n_head, b.n_head);
  EXPECT_EQ(a.n_head_kv, b.n_head_kv);
  EXPECT_EQ(a.n_ff, b.n_ff);
  EXPECT_EQ(a.n_ctx_train, b.n_ctx_train);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rope_dim, b.rope_dim);
  EXPECT_EQ(a.rope_freq_base, b.rope_freq_base);
  EXPECT_EQ(a.rope_type, b.rope_type);
  EXPECT_EQ(a.rms_eps, b.rms_eps);
  EXPECT_EQ(a.activation, b.activation);
  EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
  EXPECT_EQ(a.has_sub_norms, b.has_sub_norms);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.rope_type, b.rope_type);
}

std::string Key(const char* suffix, const std::string& arch = "llama") { return keys::ArchKey(arch, suffix); }

TEST(ModelConfigTest, RoundTripsEveryArchitecture) {
  for (const char* arch_name : {"llama", "bitnet", "bitnet-b1.58", "qwen2"}) {
    SCOPED_TRACE(arch_name);
    ModelConfig config = TinyConfig(*ParseArch(arch_name));
    config.arch_name = arch_name;
    config.rope_freq_base = 500000.0f;
    config.rms_eps = 1e-6f;
    config.tied_embeddings = std::string(arch_name) != "llama";
    BuiltFile built = BuildModel(config);
    ASSERT_NE(built.file, nullptr);
    auto read = ReadModelConfig(*built.file);
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectSameConfig(*read, config);
    EXPECT_TRUE(ValidateTensors(*read, *built.file).ok());
  }
}

TEST(ModelConfigTest, WritesTheKeysLlamaCppRequires) {
  BuiltFile built = BuildModel(TinyConfig(Arch::kLlama));
  const gguf::GgufFile& f = *built.file;
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetString("general.name"), "tiny");
  EXPECT_EQ(*f.GetU32("llama.context_length"), 64u);
  EXPECT_EQ(*f.GetU32("llama.embedding_length"), 16u);
  EXPECT_EQ(*f.GetU32("llama.block_count"), 2u);
  EXPECT_EQ(*f.GetU32("llama.feed_forward_length"), 24u);
  EXPECT_EQ(*f.GetU32("llama.attention.head_count"), 4u);
  EXPECT_EQ(*f.GetU32("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(*f.GetF32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(*f.GetF32("llama.rope.freq_base"), 10000.0f);
  EXPECT_EQ(*f.GetU32("llama.rope.dimension_count"), 4u);
  EXPECT_EQ(*f.GetU32("llama.vocab_size"), 32u);
  EXPECT_EQ(*f.GetString("llama.feed_forward_activation"), "silu");
  // key_length is written only when it differs from n_embd / n_head, like llama.cpp's converters.
  EXPECT_EQ(f.Find("llama.attention.key_length"), nullptr);
}

TEST(ModelConfigTest, WriteFixesAnArchNameThatDoesNotMatchTheArch) {
  ModelConfig config = TinyConfig(Arch::kBitnet);
  config.arch_name = "llama";  // inconsistent
  gguf::GgufWriter writer;
  WriteModelConfig(config, writer);
  BuiltFile built = testing::Build(writer);
  EXPECT_EQ(*built.file->GetString("general.architecture"), "bitnet-b1.58");  // relu2
  config.activation = Activation::kSilu;
  gguf::GgufWriter writer2;
  WriteModelConfig(config, writer2);
  EXPECT_EQ(*testing::Build(writer2).file->GetString("general.architecture"), "bitnet");
}

TEST(ModelConfigTest, DefaultsFollowLlamaCpp) {
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama));
  BuiltFile built = Rewrite(*base.file, {Key(keys::kHeadCountKv), Key(keys::kRopeFreqBase),
                                         Key(keys::kRopeDimensionCount), Key(keys::kVocabSize),
                                         Key(keys::kFeedForwardActivation), "general.name"});
  auto config = ReadModelConfig(*built.file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_head_kv, 4u);  // = head_count
  EXPECT_EQ(config->rope_freq_base, 10000.0f);
  EXPECT_EQ(config->rope_dim, 4u);   // = head_dim
  EXPECT_EQ(config->n_vocab, 32u);   // rows of token_embd (no tokenizer either)
  EXPECT_EQ(config->activation, Activation::kSilu);
  EXPECT_EQ(config->rope_type, RopeType::kNorm);
  EXPECT_TRUE(config->name.empty());
}

TEST(ModelConfigTest, VocabComesFromTheTokenizerWhenTheKeyIsAbsent) {
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama));
  std::vector<std::string> tokens(32, "x");
  BuiltFile built = Rewrite(*base.file, {Key(keys::kVocabSize)},
                            {{"tokenizer.ggml.tokens", Value::StringArray(tokens)}});
  auto config = ReadModelConfig(*built.file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_vocab, 32u);
}

// `file` with a tokenizer of `n_tokens` entries and without the metadata keys in `drop`.
BuiltFile WithTokens(const gguf::GgufFile& file, size_t n_tokens, const std::set<std::string>& drop = {}) {
  return Rewrite(file, drop, {{"tokenizer.ggml.tokens", Value::StringArray(std::vector<std::string>(n_tokens, "x"))}});
}

// The error ReadModelConfig gives for `built` ("" when it reads).
std::string ReadProblem(const BuiltFile& built) {
  auto config = ReadModelConfig(*built.file);
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(config.status().message());
}

// Tokenizer and embedding must have the same size in both directions (llama.cpp requires it
// too), whether or not {arch}.vocab_size is present.
TEST(ModelConfigTest, TokenizerMustMatchTheEmbeddingRows) {
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama));  // token_embd [16, 32], vocab_size 32
  for (size_t n_tokens : {31, 33, 1}) {
    for (bool with_key : {true, false}) {
      SCOPED_TRACE(::testing::Message() << n_tokens << " tokens, vocab_size key " << with_key);
      std::set<std::string> drop;
      if (!with_key) drop.insert(Key(keys::kVocabSize));
      BuiltFile built = WithTokens(*base.file, n_tokens, drop);
      EXPECT_EQ(ReadProblem(built), absl::StrCat("model key tokenizer.ggml.tokens: tokenizer has ", n_tokens,
                                                 " tokens but the model's embedding has 32 rows "
                                                 "(token_embd.weight)"));
      Status direct = CheckTokenizerMatchesEmbedding(*built.file);
      EXPECT_TRUE(absl::IsInvalidArgument(direct)) << direct;
    }
  }
  BuiltFile equal = WithTokens(*base.file, 32);
  auto config = ReadModelConfig(*equal.file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_vocab, 32u);
  EXPECT_TRUE(ValidateTensors(*config, *equal.file).ok());
  EXPECT_TRUE(CheckTokenizerMatchesEmbedding(*base.file).ok());  // no tokenizer: nothing to compare
}

// Without token_embd (a config read from a vocab-only or partial file), the tokenizer must
// still agree with {arch}.vocab_size.
TEST(ModelConfigTest, TokenizerMustMatchVocabSizeKey) {
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama), {"token_embd.weight"});
  EXPECT_EQ(ReadProblem(WithTokens(*base.file, 31)),
            "model key llama.vocab_size: tokenizer has 31 tokens (tokenizer.ggml.tokens) but llama.vocab_size is 32");
  EXPECT_EQ(ReadProblem(WithTokens(*base.file, 33)),
            "model key llama.vocab_size: tokenizer has 33 tokens (tokenizer.ggml.tokens) but llama.vocab_size is 32");
  EXPECT_EQ(ReadProblem(WithTokens(*base.file, 32)), "");
}

TEST(ModelConfigTest, KeyLengthAllowsHeadsThatDoNotDivideEmbd) {
  ModelConfig config = TinyConfig(Arch::kLlama);
  config.n_head = 3;
  config.n_head_kv = 1;
  config.head_dim = 8;  // q_dim 24 != n_embd 16
  config.rope_dim = 8;
  BuiltFile built = BuildModel(config);
  EXPECT_EQ(*built.file->GetU32("llama.attention.key_length"), 8u);
  auto read = ReadModelConfig(*built.file);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectSameConfig(*read, config);
  EXPECT_TRUE(ValidateTensors(*read, *built.file).ok());
}

TEST(ModelConfigTest, ActivationFollowsTheArchitectureUnlessOverridden) {
  struct Case {
    std::string arch;
    std::vector<KeyValue> keys;
    Activation expected;
  };
  const std::vector<Case> cases = {
      {"llama", {}, Activation::kSilu},
      {"bitnet", {}, Activation::kSilu},        // bitnet.cpp build_bitnet: LLM_FFN_SILU
      {"bitnet-b1.58", {}, Activation::kRelu2},  // bitnet.cpp build_bitnet_158: LLM_FFN_RELU_SQR
      {"bitnet", {{"bitnet.feed_forward_activation", Value::String("relu2")}}, Activation::kRelu2},
      {"bitnet-b1.58", {{"bitnet-b1.58.feed_forward_activation", Value::String("silu")}}, Activation::kSilu},
      {"bitnet", {{"bitnet.hidden_activation", Value::String("relu2")}}, Activation::kRelu2},
      // bitfleet's key wins over upstream's.
      {"bitnet",
       {{"bitnet.hidden_activation", Value::String("relu2")},
        {"bitnet.feed_forward_activation", Value::String("silu")}},
       Activation::kSilu},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.arch);
    ModelConfig config = TinyConfig(c.arch == "llama" ? Arch::kLlama : Arch::kBitnet);
    config.arch_name = c.arch;
    BuiltFile base = BuildModel(config);
    BuiltFile built = Rewrite(*base.file, {Key(keys::kFeedForwardActivation, c.arch)}, c.keys);
    auto read = ReadModelConfig(*built.file);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->activation, c.expected);
    EXPECT_EQ(read->rope_type, c.arch == "llama" ? RopeType::kNorm : RopeType::kNeox);
    EXPECT_EQ(read->has_sub_norms, c.arch != "llama");
  }
}

TEST(ModelConfigTest, PerLayerArraysMustAgree) {
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama));
  BuiltFile uniform = Rewrite(*base.file, {}, {{Key(keys::kFeedForwardLength), Value::I32Array({24, 24})}});
  auto ok = ReadModelConfig(*uniform.file);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->n_ff, 24u);
  BuiltFile mixed = Rewrite(*base.file, {}, {{Key(keys::kFeedForwardLength), Value::I32Array({24, 48})}});
  auto bad = ReadModelConfig(*mixed.file);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("llama.feed_forward_length"), std::string::npos);
}

TEST(ModelConfigTest, RopeScalingOtherThanIdentityIsRefused) {
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama));
  BuiltFile identity = Rewrite(*base.file, {}, {{Key(keys::kRopeScalingType), Value::String("linear")},
                                                {Key(keys::kRopeScalingFactor), Value::F32(1.0f)}});
  EXPECT_TRUE(ReadModelConfig(*identity.file).ok());
  BuiltFile scaled = Rewrite(*base.file, {}, {{Key(keys::kRopeScalingType), Value::String("linear")},
                                              {Key(keys::kRopeScalingFactor), Value::F32(4.0f)}});
  auto bad = ReadModelConfig(*scaled.file);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("llama.rope.scaling.type"), std::string::npos);
}

// Each row breaks one key; the error must be InvalidArgument and name `names`.
struct BadKey {
  std::string key;
  Value value;
  std::string names;
};

TEST(ModelConfigTest, HostileValuesAreRejectedNamingTheKey) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<BadKey> cases = {
      {Key(keys::kEmbeddingLength), Value::U32(0), Key(keys::kEmbeddingLength)},
      {Key(keys::kEmbeddingLength), Value::U32(65537), Key(keys::kEmbeddingLength)},
      {Key(keys::kEmbeddingLength), Value::String("16"), Key(keys::kEmbeddingLength)},
      {Key(keys::kEmbeddingLength), Value::I32(-16), Key(keys::kEmbeddingLength)},
      {Key(keys::kEmbeddingLength), Value::U64(1ull << 40), Key(keys::kEmbeddingLength)},
      {Key(keys::kBlockCount), Value::U32(0), Key(keys::kBlockCount)},
      {Key(keys::kBlockCount), Value::U32(1025), Key(keys::kBlockCount)},
      {Key(keys::kFeedForwardLength), Value::U32(0), Key(keys::kFeedForwardLength)},
      {Key(keys::kContextLength), Value::U32(0), Key(keys::kContextLength)},
      {Key(keys::kHeadCount), Value::U32(0), Key(keys::kHeadCount)},
      {Key(keys::kHeadCount), Value::U32(3), Key(keys::kHeadCount)},      // 3 does not divide 16
      {Key(keys::kHeadCountKv), Value::U32(3), Key(keys::kHeadCountKv)},  // 3 does not divide 4
      {Key(keys::kHeadCountKv), Value::U32(8), Key(keys::kHeadCountKv)},  // more KV than Q heads
      {Key(keys::kHeadCountKv), Value::U32(0), Key(keys::kHeadCountKv)},
      {Key(keys::kRopeDimensionCount), Value::U32(3), Key(keys::kRopeDimensionCount)},  // odd
      {Key(keys::kRopeDimensionCount), Value::U32(6), Key(keys::kRopeDimensionCount)},  // > head_dim
      {Key(keys::kRopeDimensionCount), Value::U32(0), Key(keys::kRopeDimensionCount)},
      {Key(keys::kKeyLength), Value::U32(0), Key(keys::kKeyLength)},
      {Key(keys::kValueLength), Value::U32(8), Key(keys::kValueLength)},
      {Key(keys::kVocabSize), Value::U32(5u << 20), Key(keys::kVocabSize)},
      {Key(keys::kVocabSize), Value::U32(0), Key(keys::kVocabSize)},
      {Key(keys::kRmsEps), Value::F32(0.0f), Key(keys::kRmsEps)},
      {Key(keys::kRmsEps), Value::F32(nan), Key(keys::kRmsEps)},
      {Key(keys::kRmsEps), Value::String("tiny"), Key(keys::kRmsEps)},
      {Key(keys::kRopeFreqBase), Value::F32(-1.0f), Key(keys::kRopeFreqBase)},
      {Key(keys::kRopeFreqBase), Value::F32(std::numeric_limits<float>::infinity()), Key(keys::kRopeFreqBase)},
      {Key(keys::kFeedForwardActivation), Value::String("gelu"), Key(keys::kFeedForwardActivation)},
      {Key(keys::kFeedForwardActivation), Value::U32(1), Key(keys::kFeedForwardActivation)},
      {"general.architecture", Value::String("gpt2"), "general.architecture"},
      {"general.architecture", Value::U32(1), "general.architecture"},
      {"general.name", Value::U32(1), "general.name"},
  };
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama));
  for (const BadKey& c : cases) {
    SCOPED_TRACE(c.key);
    BuiltFile built = Rewrite(*base.file, {}, {{c.key, c.value}});
    ASSERT_NE(built.file, nullptr);
    auto config = ReadModelConfig(*built.file);
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(c.names), std::string::npos) << config.status();
  }
}

TEST(ModelConfigTest, MissingRequiredKeysAreNamed) {
  BuiltFile base = BuildModel(TinyConfig(Arch::kLlama));
  for (const std::string& key : {std::string("general.architecture"), Key(keys::kContextLength),
                                Key(keys::kEmbeddingLength), Key(keys::kBlockCount),
                                Key(keys::kFeedForwardLength), Key(keys::kHeadCount), Key(keys::kRmsEps)}) {
    SCOPED_TRACE(key);
    BuiltFile built = Rewrite(*base.file, {key});
    auto config = ReadModelConfig(*built.file);
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(key), std::string::npos) << config.status();
  }
}

TEST(ModelConfigTest, ParameterCount) {
  ModelConfig c = TinyConfig(Arch::kLlama);
  // embd 16, vocab 32, q 16, kv 8, ff 24, 2 layers, untied.
  const uint64_t per_layer = 2 * 16 + 16 * 16 * 2 + 16 * 8 * 2 + 16 * 24 * 3;
  EXPECT_EQ(ParameterCount(c), 2 * 32 * 16 + 16 + 2 * per_layer);
  c.tied_embeddings = true;
  EXPECT_EQ(ParameterCount(c), 32 * 16 + 16 + 2 * per_layer);
  c.has_sub_norms = true;
  EXPECT_EQ(ParameterCount(c), 32 * 16 + 16 + 2 * (per_layer + 16 + 24));
  c.has_sub_norms = false;
  c.qkv_bias = true;
  EXPECT_EQ(ParameterCount(c), 32 * 16 + 16 + 2 * (per_layer + 16 + 8 + 8));
}

TEST(ModelConfigTest, NamesAndParsers) {
  EXPECT_EQ(*ParseActivation("relu2"), Activation::kRelu2);
  EXPECT_EQ(*ParseActivation("swiglu"), Activation::kSilu);
  EXPECT_FALSE(ParseActivation("").ok());
  EXPECT_EQ(*ParseArch("bitnet-b1.58"), Arch::kBitnet);
  EXPECT_EQ(*ParseArch("qwen2"), Arch::kQwen2);
  EXPECT_EQ(ArchEnumName(Arch::kQwen2), "qwen2");
  EXPECT_FALSE(ParseArch("bitnet-25").ok());
  EXPECT_EQ(tensor_names::Layer(3, tensor_names::kAttnQ), "blk.3.attn_q.weight");
  EXPECT_EQ(tensor_names::ScaleOf(tensor_names::kFfnDown), "ffn_down.scale");
  EXPECT_EQ(ActivationName(Activation::kRelu2), "relu2");
  EXPECT_EQ(RopeTypeName(RopeType::kNeox), "neox");
}

}  // namespace
}  // namespace bitfleet::model

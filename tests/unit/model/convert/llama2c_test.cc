#include "model/convert/llama2c.h"

#include <unistd.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/fp16.h"
#include "gtest/gtest.h"
#include "model/convert/llama2c_tokenizer.h"
#include "tests/unit/model/convert/llama2c_test_util.h"

namespace bitfleet::convert {
namespace {

using testing::MakeCheckpoint;
using testing::MakeTokenizer;
using testing::SmallHeader;
using testing::SmallVocab;
using testing::SyntheticCheckpoint;
namespace tn = model::tensor_names;

struct Converted {
  std::vector<uint8_t> bytes;
  std::unique_ptr<gguf::GgufFile> file;
  model::ModelConfig config;
};

Converted Convert(const std::vector<uint8_t>& ckpt, const std::vector<uint8_t>& tok, DType type = DType::kF32) {
  Converted out;
  gguf::GgufWriter writer;
  Llama2cOptions options;
  options.weight_type = type;
  options.name = "synthetic";
  auto config = AddLlama2cModel(ckpt, tok, options, writer);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return out;
  out.config = *config;
  auto bytes = writer.WriteBuffer();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  out.bytes = std::move(*bytes);
  auto file = gguf::GgufFile::Parse(out.bytes);
  EXPECT_TRUE(file.ok()) << file.status();
  if (file.ok()) out.file = std::move(*file);
  return out;
}

// The tensor's data equals `floats` checkpoint floats starting at byte `offset` (as f32 or
// converted to f16).
void ExpectTensorIsSource(const gguf::GgufFile& file, const std::string& name, const SyntheticCheckpoint& ckpt,
                          uint64_t offset, uint64_t floats) {
  SCOPED_TRACE(name);
  const gguf::TensorInfo* t = file.FindTensor(name);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->elements(), floats);
  auto data = file.TensorData(*t);
  for (uint64_t i = 0; i < floats; ++i) {
    const float source = ckpt.At(offset + i * 4);
    if (t->type == DType::kF32) {
      float v;
      std::memcpy(&v, data.data() + i * 4, 4);
      ASSERT_EQ(v, source) << "element " << i;
    } else {
      ASSERT_EQ(t->type, DType::kF16);
      uint16_t h;
      std::memcpy(&h, data.data() + i * 2, 2);
      ASSERT_EQ(h, FloatToHalf(source)) << "element " << i;
    }
  }
}

void ExpectAllWeightsCopied(const Converted& c, const SyntheticCheckpoint& ckpt) {
  auto layout = ParseLlama2cCheckpoint(ckpt.bytes);
  ASSERT_TRUE(layout.ok()) << layout.status();
  const gguf::GgufFile& f = *c.file;
  const uint64_t dim = 8, hidden = 12, kv = 4, vocab = 10;
  ExpectTensorIsSource(f, tn::kTokenEmbd, ckpt, layout->token_embedding, vocab * dim);
  ExpectTensorIsSource(f, tn::kOutputNorm, ckpt, layout->rms_final, dim);
  if (!layout->shared_classifier) ExpectTensorIsSource(f, tn::kOutput, ckpt, layout->wcls, vocab * dim);
  for (uint32_t l = 0; l < 2; ++l) {
    ExpectTensorIsSource(f, tn::Layer(l, tn::kAttnNorm), ckpt, layout->rms_att + l * dim * 4, dim);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kAttnQ), ckpt, layout->wq + l * dim * dim * 4, dim * dim);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kAttnK), ckpt, layout->wk + l * kv * dim * 4, kv * dim);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kAttnV), ckpt, layout->wv + l * kv * dim * 4, kv * dim);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kAttnOutput), ckpt, layout->wo + l * dim * dim * 4, dim * dim);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kFfnNorm), ckpt, layout->rms_ffn + l * dim * 4, dim);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kFfnGate), ckpt, layout->w1 + l * hidden * dim * 4, hidden * dim);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kFfnDown), ckpt, layout->w2 + l * dim * hidden * 4, dim * hidden);
    ExpectTensorIsSource(f, tn::Layer(l, tn::kFfnUp), ckpt, layout->w3 + l * hidden * dim * 4, hidden * dim);
  }
}

TEST(Llama2cTest, LayoutOfTheSmallCheckpoint) {
  SyntheticCheckpoint ckpt = MakeCheckpoint(SmallHeader());
  auto layout = ParseLlama2cCheckpoint(ckpt.bytes);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->token_embedding, 28u);
  EXPECT_EQ(layout->rms_att, 28u + 4 * 80);
  EXPECT_EQ(layout->wq, layout->rms_att + 4 * 16);
  EXPECT_EQ(layout->wk, layout->wq + 4 * 128);
  EXPECT_EQ(layout->wv, layout->wk + 4 * 64);
  EXPECT_EQ(layout->head_size, 4u);
  EXPECT_EQ(layout->kv_dim, 4u);
  EXPECT_TRUE(layout->shared_classifier);
  EXPECT_EQ(layout->file_bytes, ckpt.bytes.size());
}

TEST(Llama2cTest, ConvertsSharedClassifierCheckpoint) {
  SyntheticCheckpoint ckpt = MakeCheckpoint(SmallHeader());
  Converted c = Convert(ckpt.bytes, MakeTokenizer(SmallVocab()));
  ASSERT_NE(c.file, nullptr);
  auto config = model::ReadModelConfig(*c.file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->arch, model::Arch::kLlama);
  EXPECT_EQ(config->name, "synthetic");
  EXPECT_EQ(config->n_embd, 8u);
  EXPECT_EQ(config->n_ff, 12u);
  EXPECT_EQ(config->n_layer, 2u);
  EXPECT_EQ(config->n_head, 2u);
  EXPECT_EQ(config->n_head_kv, 1u);
  EXPECT_EQ(config->n_vocab, 10u);
  EXPECT_EQ(config->n_ctx_train, 4u);
  EXPECT_EQ(config->head_dim, 4u);
  EXPECT_EQ(config->rope_dim, 4u);
  EXPECT_EQ(config->rope_type, model::RopeType::kNorm);
  EXPECT_EQ(config->activation, model::Activation::kSilu);
  EXPECT_TRUE(config->tied_embeddings);
  EXPECT_EQ(c.file->FindTensor(tn::kOutput), nullptr);
  EXPECT_TRUE(model::ValidateTensors(*config, *c.file).ok());
  EXPECT_EQ(*c.file->GetU32("general.file_type"), 0u);
  ExpectAllWeightsCopied(c, ckpt);
}

TEST(Llama2cTest, ConvertsUnsharedClassifierCheckpoint) {
  SyntheticCheckpoint ckpt = MakeCheckpoint(SmallHeader(/*shared=*/false));
  Converted c = Convert(ckpt.bytes, MakeTokenizer(SmallVocab()));
  ASSERT_NE(c.file, nullptr);
  auto config = model::ReadModelConfig(*c.file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->tied_embeddings);
  EXPECT_EQ(config->n_vocab, 10u);
  ASSERT_NE(c.file->FindTensor(tn::kOutput), nullptr);
  EXPECT_TRUE(model::ValidateTensors(*config, *c.file).ok());
  ExpectAllWeightsCopied(c, ckpt);
}

TEST(Llama2cTest, F16KeepsNormsF32) {
  SyntheticCheckpoint ckpt = MakeCheckpoint(SmallHeader());
  Converted c = Convert(ckpt.bytes, MakeTokenizer(SmallVocab()), DType::kF16);
  ASSERT_NE(c.file, nullptr);
  EXPECT_EQ(c.file->FindTensor(tn::kTokenEmbd)->type, DType::kF16);
  EXPECT_EQ(c.file->FindTensor(tn::Layer(0, tn::kAttnQ))->type, DType::kF16);
  EXPECT_EQ(c.file->FindTensor(tn::Layer(0, tn::kAttnNorm))->type, DType::kF32);
  EXPECT_EQ(c.file->FindTensor(tn::kOutputNorm)->type, DType::kF32);
  EXPECT_EQ(*c.file->GetU32("general.file_type"), 1u);
  ExpectAllWeightsCopied(c, ckpt);
}

TEST(Llama2cTest, RejectsQuantizedOutputTypes) {
  SyntheticCheckpoint ckpt = MakeCheckpoint(SmallHeader());
  gguf::GgufWriter writer;
  Llama2cOptions options;
  options.weight_type = DType::kQ4_0;
  auto config = AddLlama2cModel(ckpt.bytes, MakeTokenizer(SmallVocab()), options, writer);
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("q4_0"), std::string::npos) << config.status();
}

TEST(Llama2cTest, TokenizerBecomesSentencePieceMetadata) {
  SyntheticCheckpoint ckpt = MakeCheckpoint(SmallHeader());
  Converted c = Convert(ckpt.bytes, MakeTokenizer(SmallVocab()));
  ASSERT_NE(c.file, nullptr);
  const gguf::GgufFile& f = *c.file;
  EXPECT_EQ(*f.GetString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(*f.GetString("tokenizer.ggml.pre"), "default");
  const std::vector<std::string> expected_tokens = {"<unk>",  "<s>", "</s>", "<0x00>",          "<0x0A>",
                                                    "\xE2\x96\x81the", "he", "",     "\xE2\x96\x81" "a\xE2\x96\x81" "b", "x"};
  EXPECT_EQ(*f.GetStringArray("tokenizer.ggml.tokens"), expected_tokens);
  EXPECT_EQ(*f.GetI32Array("tokenizer.ggml.token_type"), (std::vector<int32_t>{2, 3, 3, 6, 6, 1, 1, 3, 1, 1}));
  EXPECT_EQ(*f.GetF32Array("tokenizer.ggml.scores"),
            (std::vector<float>{0, 0, 0, 0, 0, -1, -2, -3, -4, -5.5f}));
  EXPECT_EQ(*f.GetU32("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(*f.GetU32("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(*f.GetU32("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(*f.GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(*f.GetBool("tokenizer.ggml.add_eos_token"));
  EXPECT_TRUE(*f.GetBool("tokenizer.ggml.add_space_prefix"));
}

// Each case corrupts the checkpoint; the error must be InvalidArgument and mention `expect`.
struct BadCheckpoint {
  std::string what;
  std::vector<uint8_t> bytes;
  std::string expect;
};

// The small checkpoint's bytes with its header replaced by `h`.
std::vector<uint8_t> WithHeader(const Llama2cHeader& h) {
  std::vector<uint8_t> bytes = MakeCheckpoint(SmallHeader()).bytes;
  std::memcpy(bytes.data(), &h, sizeof(h));
  return bytes;
}

TEST(Llama2cTest, HostileCheckpointsFailCleanly) {
  const std::vector<uint8_t> good = MakeCheckpoint(SmallHeader()).bytes;
  std::vector<uint8_t> truncated(good.begin(), good.end() - 4);
  std::vector<uint8_t> longer = good;
  longer.resize(good.size() + 4);
  std::vector<uint8_t> versioned = good;
  const uint32_t magic = 0x616b3432;
  std::memcpy(versioned.data(), &magic, 4);
  auto header = [](auto edit) {
    Llama2cHeader h = SmallHeader();
    edit(h);
    return WithHeader(h);
  };
  const std::vector<BadCheckpoint> cases = {
      {"empty", {}, "shorter than the 28-byte header"},
      {"short header", std::vector<uint8_t>(good.begin(), good.begin() + 20), "header"},
      {"truncated", truncated, "truncated"},
      {"trailing bytes", longer, "longer than the header implies"},
      {"versioned export", versioned, "version 0"},
      {"zero dim", header([](Llama2cHeader& h) { h.dim = 0; }), "dim = 0"},
      {"negative layers", header([](Llama2cHeader& h) { h.n_layers = -2; }), "n_layers"},
      {"huge layers", header([](Llama2cHeader& h) { h.n_layers = INT_MAX; }), "n_layers"},
      {"huge dim", header([](Llama2cHeader& h) { h.dim = 1 << 30; }), "dim"},
      {"heads do not divide dim", header([](Llama2cHeader& h) { h.n_heads = 3; }), "does not divide dim"},
      {"more kv than heads", header([](Llama2cHeader& h) { h.n_kv_heads = 4; }), "n_kv_heads"},
      {"zero kv heads", header([](Llama2cHeader& h) { h.n_kv_heads = 0; }), "n_kv_heads"},
      {"odd head size", header([](Llama2cHeader& h) { h.n_heads = 8; h.n_kv_heads = 8; }), "odd"},
      {"vocab INT_MIN", header([](Llama2cHeader& h) { h.vocab_size = INT_MIN; }), "vocab_size"},
      {"zero vocab", header([](Llama2cHeader& h) { h.vocab_size = 0; }), "vocab_size"},
      {"zero seq_len", header([](Llama2cHeader& h) { h.seq_len = 0; }), "seq_len"},
      {"size mismatch from header", header([](Llama2cHeader& h) { h.hidden_dim = 13; }), "implies"},
  };
  for (const BadCheckpoint& c : cases) {
    SCOPED_TRACE(c.what);
    auto layout = ParseLlama2cCheckpoint(c.bytes);
    ASSERT_FALSE(layout.ok());
    EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(layout.status().message().find(c.expect), std::string::npos) << layout.status();
  }
}

TEST(Llama2cTest, HostileTokenizersFailCleanly) {
  const std::vector<uint8_t> good = MakeTokenizer(SmallVocab());
  ASSERT_TRUE(ReadLlama2cTokenizer(good, 10).ok());
  std::vector<uint8_t> nan_score = MakeTokenizer({{std::numeric_limits<float>::quiet_NaN(), "a"}});
  std::vector<uint8_t> negative_len = good;
  const int32_t minus_one = -1;
  std::memcpy(negative_len.data() + 8, &minus_one, 4);  // length of token 0
  const std::vector<BadCheckpoint> cases = {
      {"empty", {}, "too short"},
      {"truncated", std::vector<uint8_t>(good.begin(), good.end() - 1), "truncated"},
      {"trailing bytes (other vocabulary)", MakeTokenizer([] {
         auto v = SmallVocab();
         v.push_back({0.0f, "y"});
         return v;
       }()),
       "another vocabulary"},
      {"token longer than max_token_length", MakeTokenizer(SmallVocab(), 2), "max_token_length"},
      {"zero max_token_length", MakeTokenizer(SmallVocab(), 0), "max_token_length"},
      {"negative length", negative_len, "length -1"},
  };
  for (const BadCheckpoint& c : cases) {
    SCOPED_TRACE(c.what);
    auto vocab = ReadLlama2cTokenizer(c.bytes, 10);
    ASSERT_FALSE(vocab.ok());
    EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(vocab.status().message().find(c.expect), std::string::npos) << vocab.status();
  }
  auto nan = ReadLlama2cTokenizer(nan_score, 1);
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("non-finite"), std::string::npos) << nan.status();
  // A vocabulary far larger than the file cannot make the reader reserve memory for it.
  EXPECT_FALSE(ReadLlama2cTokenizer(good, 4u << 20).ok());
}

// The real stories260K checkpoint from ../shared (skipped when absent).
class Stories260KTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* shared = std::getenv("BITFLEET_SHARED_DIR");
    if (shared == nullptr) GTEST_SKIP() << "BITFLEET_SHARED_DIR is not set";
    dir_ = std::filesystem::path(shared) / "models" / "stories260K";
    if (!std::filesystem::exists(dir_ / "stories260K.bin") || !std::filesystem::exists(dir_ / "tok512.bin")) {
      GTEST_SKIP() << "stories260K not found under " << dir_;
    }
    out_ = std::filesystem::path(::testing::TempDir()) / ("stories260K-" + std::to_string(getpid()) + ".gguf");
  }
  void TearDown() override {
    if (!out_.empty()) std::filesystem::remove(out_);
  }
  std::filesystem::path dir_;
  std::filesystem::path out_;
};

TEST_F(Stories260KTest, ConvertsWithKnownShapeTokensAndWeights) {
  const std::string ckpt_path = (dir_ / "stories260K.bin").string();
  Status status = ConvertLlama2cFile(ckpt_path, (dir_ / "tok512.bin").string(), out_.string(), {});
  ASSERT_TRUE(status.ok()) << status;
  auto file = gguf::GgufFile::Open(out_.string());
  ASSERT_TRUE(file.ok()) << file.status();
  const gguf::GgufFile& f = **file;
  auto config = model::ReadModelConfig(f);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name, "stories260K");
  EXPECT_EQ(config->n_embd, 64u);
  EXPECT_EQ(config->n_layer, 5u);
  EXPECT_EQ(config->n_head, 8u);
  EXPECT_EQ(config->n_head_kv, 4u);
  EXPECT_EQ(config->n_vocab, 512u);
  EXPECT_EQ(config->n_ff, 172u);
  EXPECT_EQ(config->n_ctx_train, 512u);
  EXPECT_EQ(config->head_dim, 8u);
  EXPECT_TRUE(config->tied_embeddings);
  EXPECT_TRUE(model::ValidateTensors(*config, f).ok());
  EXPECT_EQ(f.tensors().size(), 2u + 5u * 9u);

  auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[2], "</s>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  EXPECT_EQ((*tokens)[258], "<0xFF>");
  EXPECT_EQ((*tokens)[259], "\xE2\x96\x81t");  // " t" in the llama2.c file
  EXPECT_EQ((*tokens)[260], "he");
  auto types = f.GetI32Array("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok());
  EXPECT_EQ((*types)[0], 2);
  EXPECT_EQ((*types)[1], 3);
  EXPECT_EQ((*types)[3], 6);
  EXPECT_EQ((*types)[259], 1);
  auto scores = f.GetF32Array("tokenizer.ggml.scores");
  ASSERT_TRUE(scores.ok());
  EXPECT_EQ((*scores)[260], -1.0f);

  // Weights equal the raw checkpoint floats: token_embd[0..] starts right after the header,
  // and blk.3.attn_k.weight at wk + 3 * kv_dim * dim floats.
  auto raw = MappedFile::Open(ckpt_path);
  ASSERT_TRUE(raw.ok());
  auto layout = ParseLlama2cCheckpoint((*raw)->bytes());
  ASSERT_TRUE(layout.ok()) << layout.status();
  auto raw_float = [&](uint64_t offset) {
    float v;
    std::memcpy(&v, (*raw)->bytes().data() + offset, 4);
    return v;
  };
  auto gguf_float = [&](const std::string& name, uint64_t index) {
    float v;
    std::memcpy(&v, f.TensorData(*f.FindTensor(name)).data() + index * 4, 4);
    return v;
  };
  EXPECT_EQ(gguf_float(tn::kTokenEmbd, 0), raw_float(28));
  EXPECT_EQ(gguf_float(tn::kTokenEmbd, 64 * 511 + 63), raw_float(28 + 4 * (64 * 511 + 63)));
  const uint64_t k_base = layout->wk + 3ull * 32 * 64 * 4;
  EXPECT_EQ(gguf_float(tn::Layer(3, tn::kAttnK), 0), raw_float(k_base));
  EXPECT_EQ(gguf_float(tn::Layer(3, tn::kAttnK), 777), raw_float(k_base + 777 * 4));
  EXPECT_EQ(gguf_float(tn::Layer(4, tn::kFfnDown), 100), raw_float(layout->w2 + (4ull * 64 * 172 + 100) * 4));
  EXPECT_EQ(gguf_float(tn::kOutputNorm, 5), raw_float(layout->rms_final + 5 * 4));
}

}  // namespace
}  // namespace bitfleet::convert

// Loading vocabularies from GGUF metadata (built in memory with GgufWriter).
#include "model/tokenizer/gguf_vocab_loader.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/gguf/gguf.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tokenizer {
namespace {

using gguf::Value;

// Parses what `writer` produces; the bytes are kept alive in `storage`.
std::unique_ptr<gguf::GgufFile> Parse(const gguf::GgufWriter& writer, std::vector<uint8_t>* storage) {
  auto bytes = writer.WriteBuffer();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  *storage = std::move(bytes).value();
  auto file = gguf::GgufFile::Parse(*storage);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(file).value() : nullptr;
}

// A llama2.c-style SentencePiece vocab: tokens and scores only, defaults for the rest.
gguf::GgufWriter Llama2cWriter() {
  const Vocab v = testing::MakeSpmVocab();
  gguf::GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString(std::string(kKeyModel), "llama");
  w.Set(std::string(kKeyTokens), Value::StringArray(v.tokens));
  w.Set(std::string(kKeyScores), Value::F32Array(v.scores));
  return w;
}

gguf::GgufWriter BpeWriter() {
  const Vocab v = testing::MakeBpeVocab();
  gguf::GgufWriter w;
  w.SetString(std::string(kKeyModel), "gpt2");
  w.SetString(std::string(kKeyPre), "gpt-2");
  w.Set(std::string(kKeyTokens), Value::StringArray(v.tokens));
  std::vector<int32_t> types;
  for (TokenType t : v.types) types.push_back(static_cast<int32_t>(t));
  w.Set(std::string(kKeyTokenType), Value::I32Array(types));
  w.Set(std::string(kKeyMerges), Value::StringArray(v.merges));
  w.SetU32(std::string(kKeyEosId), static_cast<uint32_t>(v.special.eos));
  return w;
}

TEST(GgufVocabLoaderTest, Llama2cStyleSentencePieceGetsDefaults) {
  std::vector<uint8_t> storage;
  auto file = Parse(Llama2cWriter(), &storage);
  ASSERT_NE(file, nullptr);
  auto vocab = LoadVocabFromGguf(*file);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->model, TokenizerModel::kSentencePiece);
  EXPECT_EQ(vocab->special.bos, 1);
  EXPECT_EQ(vocab->special.eos, 2);
  EXPECT_EQ(vocab->special.unk, 0);
  EXPECT_TRUE(vocab->add_bos);
  EXPECT_TRUE(vocab->add_space_prefix);
  EXPECT_TRUE(vocab->types.empty());  // inferred by Tokenizer::Create
  auto tok = Tokenizer::Create(*std::move(vocab));
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("hello world\n");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), 1);
  EXPECT_EQ(*(*tok)->Decode(*ids), "hello world\n");
}

TEST(GgufVocabLoaderTest, FlagsAndIdsFromTheFile) {
  gguf::GgufWriter w = Llama2cWriter();
  w.SetBool(std::string(kKeyAddBos), false);
  w.SetBool(std::string(kKeyAddSpacePrefix), false);
  w.SetU32(std::string(kKeyEotId), 2);
  w.SetU32(std::string(kKeyPadId), 999999);  // out of range: dropped with a warning
  std::vector<uint8_t> storage;
  auto file = Parse(w, &storage);
  auto vocab = LoadVocabFromGguf(*file);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_FALSE(vocab->add_bos);
  EXPECT_FALSE(vocab->add_space_prefix);
  EXPECT_EQ(vocab->special.eot, 2);
  EXPECT_EQ(vocab->special.pad, kNoToken);
}

TEST(GgufVocabLoaderTest, ByteLevelBpe) {
  std::vector<uint8_t> storage;
  auto file = Parse(BpeWriter(), &storage);
  auto vocab = LoadVocabFromGguf(*file);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->model, TokenizerModel::kByteLevelBpe);
  EXPECT_EQ(vocab->pre, "gpt-2");
  EXPECT_FALSE(vocab->add_bos);
  EXPECT_EQ(vocab->special.bos, kNoToken);
  auto tok = Tokenizer::Create(*std::move(vocab));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("hello world")->size(), 2u);
}

TEST(GgufVocabLoaderTest, Llama3PreTokenizerTurnsOnBos) {
  gguf::GgufWriter w = BpeWriter();
  w.SetString(std::string(kKeyPre), "llama-bpe");
  w.SetU32(std::string(kKeyBosId), 3);
  std::vector<uint8_t> storage;
  auto file = Parse(w, &storage);
  auto vocab = LoadVocabFromGguf(*file);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_TRUE(vocab->add_bos);
  EXPECT_EQ(vocab->special.bos, 3);
}

TEST(GgufVocabLoaderTest, Errors) {
  std::vector<uint8_t> storage;
  {
    gguf::GgufWriter w;
    w.SetString("general.architecture", "llama");
    auto file = Parse(w, &storage);
    EXPECT_EQ(LoadVocabFromGguf(*file).status().code(), absl::StatusCode::kNotFound);
  }
  {
    gguf::GgufWriter w = Llama2cWriter();
    w.SetString(std::string(kKeyModel), "bert");
    auto file = Parse(w, &storage);
    EXPECT_EQ(LoadVocabFromGguf(*file).status().code(), absl::StatusCode::kUnimplemented);
  }
  {
    gguf::GgufWriter w = Llama2cWriter();
    w.SetU32(std::string(kKeyBosId), 100000);
    auto file = Parse(w, &storage);
    EXPECT_EQ(LoadVocabFromGguf(*file).status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    gguf::GgufWriter w = Llama2cWriter();
    w.SetString(std::string(kKeyTokens), "not an array");
    auto file = Parse(w, &storage);
    EXPECT_EQ(LoadVocabFromGguf(*file).status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    gguf::GgufWriter w = Llama2cWriter();
    w.Set(std::string(kKeyTokenType), Value::I32Array({1, 2, 99}));
    auto file = Parse(w, &storage);
    EXPECT_EQ(LoadVocabFromGguf(*file).status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    gguf::GgufWriter w = Llama2cWriter();
    w.Set(std::string(kKeyScores), Value::F32Array({1.0f, 2.0f}));  // too few scores
    auto file = Parse(w, &storage);
    auto vocab = LoadVocabFromGguf(*file);
    ASSERT_TRUE(vocab.ok());
    EXPECT_EQ(Tokenizer::Create(*std::move(vocab)).status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    gguf::GgufWriter w = BpeWriter();
    w.Set(std::string(kKeyMerges), Value::StringArray({"h e", "zz top"}));
    auto file = Parse(w, &storage);
    auto vocab = LoadVocabFromGguf(*file);
    ASSERT_TRUE(vocab.ok());
    EXPECT_EQ(Tokenizer::Create(*std::move(vocab)).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_FALSE(LoadTokenizerFromGguf("/nonexistent/file.gguf").ok());
}

}  // namespace
}  // namespace bitfleet::tokenizer

// Real files written by llama.cpp's tools: the vocab-only GGUFs in
// ../shared/tokenizer-vectors. Each must parse, and rewriting it with GgufWriter must give
// back the same bytes (plus the data-section padding that older writers left out when a file
// has no tensors). Skipped where the shared assets are absent.
#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "core/mapped_file.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf.h"

namespace bitfleet::gguf {
namespace {

std::vector<std::filesystem::path> VocabFiles() {
  const char* shared = std::getenv("BITFLEET_SHARED_DIR");
  const std::filesystem::path dir = std::filesystem::path(shared ? shared : "../shared") / "tokenizer-vectors";
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".gguf") out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<std::vector<uint8_t>> Rewrite(const GgufFile& file) {
  GgufWriter writer;
  for (const KeyValue& kv : file.metadata()) writer.Set(kv.key, kv.value);
  for (const TensorInfo& t : file.tensors()) {
    const auto data = file.TensorData(t);
    BF_RETURN_IF_ERROR(writer.AddTensor(t.name, t.type, t.shape, std::vector<uint8_t>(data.begin(), data.end())));
  }
  return writer.WriteBuffer();
}

TEST(GgufRealFilesTest, LlamaCppVocabFilesParseAndRewriteIdentically) {
  const auto paths = VocabFiles();
  if (paths.empty()) GTEST_SKIP() << "no ../shared/tokenizer-vectors/*.gguf (shared assets absent)";
  for (const auto& path : paths) {
    SCOPED_TRACE(path.string());
    auto file = GgufFile::Open(path.string());
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->version(), 3u);
    EXPECT_TRUE((*file)->tensors().empty());
    auto tokens = (*file)->GetStringArray("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_GT(tokens->size(), 1000u);
    if (auto vocab = (*file)->GetU32("llama.vocab_size"); vocab.ok()) {
      EXPECT_EQ(*vocab, tokens->size());
    }
    if ((*file)->Find("tokenizer.ggml.scores") != nullptr) {
      EXPECT_EQ((*file)->GetF32Array("tokenizer.ggml.scores")->size(), tokens->size());
    }

    auto original = MappedFile::Open(path.string());
    ASSERT_TRUE(original.ok());
    const auto bytes = (*original)->bytes();
    auto rewritten = Rewrite(**file);
    ASSERT_TRUE(rewritten.ok()) << rewritten.status();
    ASSERT_GE(rewritten->size(), bytes.size());
    EXPECT_LT(rewritten->size() - bytes.size(), (*file)->alignment());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), rewritten->begin())) << "rewrite differs from the original";
    for (size_t i = bytes.size(); i < rewritten->size(); ++i) EXPECT_EQ((*rewritten)[i], 0);
  }
}

}  // namespace
}  // namespace bitfleet::gguf

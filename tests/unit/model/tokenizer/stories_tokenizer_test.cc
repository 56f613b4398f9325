// The llama2.c tokenizer of the stories260K model (shared/models/stories260K/tok512.bin),
// converted to GGUF metadata by the llama2.c converter (model/convert) and loaded back.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert/llama2c_tokenizer.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "model/tokenizer/incremental_decoder.h"

namespace bitfleet::tokenizer {
namespace {

namespace fs = std::filesystem;

TEST(StoriesTokenizerTest, ConvertedLlama2cVocab) {
  const char* shared = std::getenv("BITFLEET_SHARED_DIR");
  const fs::path path = fs::path(shared != nullptr ? shared : "../shared") / "models/stories260K/tok512.bin";
  if (!fs::exists(path)) GTEST_SKIP() << "no llama2.c tokenizer at " << path;
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto sp = convert::ReadLlama2cTokenizer(bytes, 512);
  ASSERT_TRUE(sp.ok()) << sp.status();
  gguf::GgufWriter writer;
  convert::WriteLlamaTokenizer(*sp, writer);
  auto buffer = writer.WriteBuffer();
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  auto file = gguf::GgufFile::Parse(*buffer);
  ASSERT_TRUE(file.ok()) << file.status();
  auto vocab = LoadVocabFromGguf(**file);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  auto tok = Tokenizer::Create(*std::move(vocab));
  ASSERT_TRUE(tok.ok()) << tok.status();

  // shared/models/stories260K/README.md: this prompt is 35 tokens with BOS.
  const std::string prompt = "One day, a clever fox found a shiny key under the old oak tree.";
  auto ids = (*tok)->Encode(prompt);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->size(), 35u);
  EXPECT_EQ(ids->front(), 1);
  EXPECT_EQ(*(*tok)->Decode(*ids), prompt);
  auto newline = (*tok)->Encode("a\nb", {.add_special = false});
  EXPECT_EQ(*(*tok)->Decode(*newline), "a\nb");  // "\n" goes through byte fallback <0x0A>
  EXPECT_TRUE((*tok)->IsEndOfGeneration(2));

  // Streaming a continuation keeps its leading space.
  auto continuation = (*tok)->Encode(" there was a girl", {.add_special = false});
  IncrementalDecoder stream(**tok, {.strip_leading_space = false});
  std::string streamed;
  for (TokenId id : *continuation) streamed += *stream.Push(id);
  EXPECT_EQ(streamed + stream.Finish(), "  there was a girl");  // prefix ▁ + the text's own space
}

}  // namespace
}  // namespace bitfleet::tokenizer

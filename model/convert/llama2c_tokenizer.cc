#include "model/convert/llama2c_tokenizer.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace bitfleet::convert {
namespace {

// Longest token llama2.c's own tokenizer would accept; real files use a few dozen bytes.
constexpr int32_t kMaxTokenLength = 1 << 16;
constexpr char kSpacePiece[] = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// Bounds-checked little-endian reader over the tokenizer bytes.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }

  bool Read(void* out, size_t n) {
    if (remaining() < n) return false;
    std::memcpy(out, bytes_.data() + offset_, n);
    offset_ += n;
    return true;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t offset_ = 0;
};

bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

// SentencePiece byte-fallback pieces are spelled "<0xNN>".
bool IsBytePiece(const std::string& text) {
  return text.size() == 6 && text.compare(0, 3, "<0x") == 0 && IsHexDigit(text[3]) &&
         IsHexDigit(text[4]) && text[5] == '>';
}

std::string SpacesToPieces(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == ' ') {
      out += kSpacePiece;
    } else {
      out += c;
    }
  }
  return out;
}

Status Error(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("llama2.c tokenizer: ", message));
}

}  // namespace

StatusOr<SentencePieceVocab> ReadLlama2cTokenizer(std::span<const uint8_t> bytes, uint32_t n_vocab) {
  Reader reader(bytes);
  int32_t max_token_length = 0;
  if (!reader.Read(&max_token_length, sizeof(max_token_length))) {
    return Error(absl::StrCat("file of ", bytes.size(), " bytes is too short for its header"));
  }
  if (max_token_length < 1 || max_token_length > kMaxTokenLength) {
    return Error(absl::StrCat("max_token_length ", max_token_length, " is outside [1, ", kMaxTokenLength, "]"));
  }
  // Each token needs at least 8 bytes, so this bounds the reservation by the file size.
  if (reader.remaining() / 8 < n_vocab) {
    return Error(absl::StrCat("file of ", bytes.size(), " bytes cannot hold the ", n_vocab,
                              " tokens the checkpoint declares"));
  }

  SentencePieceVocab vocab;
  vocab.tokens.reserve(n_vocab);
  vocab.scores.reserve(n_vocab);
  vocab.types.reserve(n_vocab);
  for (uint32_t id = 0; id < n_vocab; ++id) {
    float score = 0.0f;
    int32_t length = 0;
    if (!reader.Read(&score, sizeof(score)) || !reader.Read(&length, sizeof(length))) {
      return Error(absl::StrCat("truncated at token ", id, " (offset ", reader.offset(), ")"));
    }
    if (!std::isfinite(score)) return Error(absl::StrCat("token ", id, " has a non-finite score"));
    if (length < 0 || length > max_token_length) {
      return Error(absl::StrCat("token ", id, " has length ", length, ", outside [0, max_token_length ",
                                max_token_length, "]"));
    }
    std::string text(static_cast<size_t>(length), '\0');
    if (!reader.Read(text.data(), text.size())) {
      return Error(absl::StrCat("truncated in the text of token ", id, " (offset ", reader.offset(), ")"));
    }

    // The fixed special ids get their SentencePiece spelling back, as llama.cpp's
    // convert-llama2c-to-ggml does.
    TokenType type = TokenType::kNormal;
    if (id == kUnknownId) {
      text = "<unk>";
      type = TokenType::kUnknown;
    } else if (id == kBosId) {
      text = "<s>";
      type = TokenType::kControl;
    } else if (id == kEosId) {
      text = "</s>";
      type = TokenType::kControl;
    } else if (text.empty()) {
      type = TokenType::kControl;
    } else if (IsBytePiece(text)) {
      type = TokenType::kByte;
    } else {
      text = SpacesToPieces(text);
    }
    vocab.tokens.push_back(std::move(text));
    vocab.scores.push_back(score);
    vocab.types.push_back(type);
  }
  if (reader.remaining() != 0) {
    return Error(absl::StrCat(reader.remaining(), " bytes follow the ", n_vocab,
                              " tokens the checkpoint declares: the tokenizer belongs to another vocabulary"));
  }
  return vocab;
}

void WriteLlamaTokenizer(const SentencePieceVocab& vocab, gguf::GgufWriter& writer) {
  std::vector<int32_t> types;
  types.reserve(vocab.types.size());
  for (TokenType type : vocab.types) types.push_back(static_cast<int32_t>(type));

  writer.SetString("tokenizer.ggml.model", "llama");
  writer.SetString("tokenizer.ggml.pre", "default");
  writer.Set("tokenizer.ggml.tokens", gguf::Value::StringArray(vocab.tokens));
  writer.Set("tokenizer.ggml.scores", gguf::Value::F32Array(vocab.scores));
  writer.Set("tokenizer.ggml.token_type", gguf::Value::I32Array(types));
  writer.SetU32("tokenizer.ggml.bos_token_id", kBosId);
  writer.SetU32("tokenizer.ggml.eos_token_id", kEosId);
  writer.SetU32("tokenizer.ggml.unknown_token_id", kUnknownId);
  writer.SetBool("tokenizer.ggml.add_bos_token", true);
  writer.SetBool("tokenizer.ggml.add_eos_token", false);
  writer.SetBool("tokenizer.ggml.add_space_prefix", true);
}

}  // namespace bitfleet::convert

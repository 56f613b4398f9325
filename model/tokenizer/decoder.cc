#include "model/tokenizer/decoder.h"

#include "absl/strings/str_cat.h"
#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/utf8.h"

namespace bitfleet::tokenizer {
namespace {

constexpr std::string_view kEscapedSpace = "\xE2\x96\x81";  // ▁ U+2581

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xNN>" -> the byte; -1 when the text is not a byte piece.
int BytePieceValue(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  const int hi = HexValue(text[3]);
  const int lo = HexValue(text[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string UnescapeSpaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t hit = text.find(kEscapedSpace, pos);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(pos, hit - pos));
    out.push_back(' ');
    pos = hit + kEscapedSpace.size();
  }
  out.append(text.substr(pos));
  return out;
}

// Undoes the GPT-2 byte mapping. A code point outside the mapping (which a well-formed
// byte-level vocab never has in a normal token) is kept as its own UTF-8.
std::string UnmapBytes(std::string_view text) {
  const ByteLevelMap& map = ByteLevelMap::Get();
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Scan scan = ScanUtf8(text.substr(pos));
    if (scan.kind == Utf8Scan::Kind::kValid) {
      const int byte = map.Decode(scan.code_point);
      if (byte >= 0) {
        out.push_back(static_cast<char>(byte));
      } else {
        out.append(text.substr(pos, scan.length));
      }
    } else {
      out.append(text.substr(pos, scan.length));  // ill-formed token text: pass it through
    }
    pos += scan.length;
  }
  return out;
}

}  // namespace

PieceTable::PieceTable(const Vocab& vocab) : vocab_(vocab) {
  const size_t n = vocab.tokens.size();
  pieces_.resize(n);
  hidden_.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = vocab.tokens[i];
    switch (vocab.types[i]) {
      case TokenType::kNormal:
        pieces_[i] = vocab.model == TokenizerModel::kByteLevelBpe ? UnmapBytes(text) : UnescapeSpaces(text);
        break;
      case TokenType::kByte: {
        const int byte = BytePieceValue(text);
        pieces_[i] = byte >= 0 ? std::string(1, static_cast<char>(byte)) : text;
        break;
      }
      case TokenType::kUserDefined:
        pieces_[i] = text;  // added tokens are stored as plain text, unescaped
        break;
      case TokenType::kControl:
      case TokenType::kUnknown:
      case TokenType::kUnused:
      case TokenType::kUndefined:
        hidden_[i] = true;
        break;
    }
  }
}

Status PieceWriter::Append(TokenId id, std::string* out) {
  if (id < 0 || static_cast<size_t>(id) >= table_->size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is outside the vocabulary (", table_->size(), " tokens)"));
  }
  std::string_view piece = table_->Piece(id, render_special_);
  if (strip_pending_ && !piece.empty()) {
    if (piece.front() == ' ') piece.remove_prefix(1);
    strip_pending_ = false;
  }
  out->append(piece);
  return absl::OkStatus();
}

}  // namespace bitfleet::tokenizer

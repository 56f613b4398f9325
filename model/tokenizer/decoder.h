// Token ids -> text. PieceTable precomputes the bytes each token decodes to; PieceWriter
// strings pieces together under DecodeOptions. Tokenizer::Decode and IncrementalDecoder both
// go through PieceWriter, so streaming and whole-text decoding cannot disagree.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

struct DecodeOptions {
  // Control, unknown and unused tokens (<s>, </s>, <|eot_id|>) appear as their text when set;
  // by default they decode to nothing. User-defined tokens always appear as their text.
  bool render_special = false;
  // Drop one leading space from the first non-empty piece: the inverse of SentencePiece's
  // space prefix (Encode's add_space_prefix). Unset: the vocab's add_space_prefix. Use false
  // when decoding a continuation (generated tokens), whose leading space is real.
  std::optional<bool> strip_leading_space = std::nullopt;
};

// Decoded bytes of every token. Immutable after construction; thread-safe.
class PieceTable {
 public:
  explicit PieceTable(const Vocab& vocab);

  size_t size() const { return pieces_.size(); }
  // `id` must be in range. Hidden tokens (see DecodeOptions::render_special) give "" unless
  // `render_special`, then their vocab text.
  std::string_view Piece(TokenId id, bool render_special) const {
    if (!hidden_[id]) return pieces_[id];
    return render_special ? std::string_view(vocab_.tokens[id]) : std::string_view();
  }

 private:
  const Vocab& vocab_;
  std::vector<std::string> pieces_;
  std::vector<bool> hidden_;
};

// Appends the pieces of a token sequence in order, applying the leading-space rule once.
class PieceWriter {
 public:
  PieceWriter(const PieceTable& table, bool render_special, bool strip_leading_space)
      : table_(&table), render_special_(render_special), strip_pending_(strip_leading_space) {}

  // Appends the bytes of token `id` to `out`; InvalidArgument for an id outside the vocab.
  Status Append(TokenId id, std::string* out);

 private:
  const PieceTable* table_;
  bool render_special_;
  bool strip_pending_;
};

}  // namespace bitfleet::tokenizer

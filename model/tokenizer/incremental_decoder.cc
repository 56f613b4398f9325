#include "model/tokenizer/incremental_decoder.h"

#include "model/tokenizer/utf8.h"

namespace bitfleet::tokenizer {
namespace {

PieceWriter MakeWriter(const Tokenizer& tokenizer, const DecodeOptions& options) {
  return PieceWriter(tokenizer.pieces(), options.render_special,
                     options.strip_leading_space.value_or(tokenizer.strips_leading_space_by_default()));
}

}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, const DecodeOptions& options)
    : tokenizer_(tokenizer), options_(options), writer_(MakeWriter(tokenizer, options)) {}

StatusOr<std::string> IncrementalDecoder::Push(TokenId id) {
  BF_RETURN_IF_ERROR(writer_.Append(id, &pending_));  // appends nothing on error

  // Emit every complete sequence (ill-formed ones as U+FFFD, as SanitizeUtf8 does); keep an
  // incomplete tail. Only the tail can be incomplete: earlier bytes were resolved by now.
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    if (static_cast<uint8_t>(pending_[pos]) < 0x80) {
      out.push_back(pending_[pos++]);
      continue;
    }
    const Utf8Scan scan = ScanUtf8(std::string_view(pending_).substr(pos));
    if (scan.kind == Utf8Scan::Kind::kIncomplete) break;
    if (scan.kind == Utf8Scan::Kind::kValid) {
      out.append(pending_, pos, scan.length);
    } else {
      out.append(kReplacementChar);
    }
    pos += scan.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDecoder::Finish() {
  std::string out = pending_.empty() ? std::string() : SanitizeUtf8(pending_);
  Reset();
  return out;
}

void IncrementalDecoder::Reset() {
  pending_.clear();
  writer_ = MakeWriter(tokenizer_, options_);
}

}  // namespace bitfleet::tokenizer

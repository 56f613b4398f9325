// Streaming detokenization for generated tokens. Feed ids one at a time; each call returns the
// text that became complete, never a partial UTF-8 sequence: a character whose bytes are
// spread over several tokens (byte fallback, byte-level BPE) is held back until its last byte
// arrives, and emitted right then.
//
// Contract: for any ids, the concatenation of every Push result and then Finish() equals
// SanitizeUtf8(tokenizer.Decode(ids, options)) (utf8.h): ill-formed bytes become U+FFFD the
// same way in both, and a sequence left unfinished at the end becomes one U+FFFD in Finish().
// For ids that decode to valid UTF-8 that is exactly Decode's text.
//
// Not thread-safe (one decoder per stream); the Tokenizer must outlive it.
#pragma once

#include <string>

#include "core/status.h"
#include "model/tokenizer/decoder.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::tokenizer {

class IncrementalDecoder {
 public:
  // Generated text continues a prompt, so callers streaming a completion usually want
  // `options.strip_leading_space = false`; unset means the vocab's default, like Decode.
  explicit IncrementalDecoder(const Tokenizer& tokenizer, const DecodeOptions& options = {});

  // Decodes one more token and returns the newly complete text (may be empty).
  // InvalidArgument for an id outside the vocabulary; the decoder state is then unchanged.
  StatusOr<std::string> Push(TokenId id);

  // Ends the stream: returns held-back bytes of an unfinished character as U+FFFD (or "").
  // The decoder can then be reused for a new stream, as after Reset().
  std::string Finish();

  // Starts a new stream (drops held-back bytes, re-arms the leading-space rule).
  void Reset();

  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  DecodeOptions options_;
  PieceWriter writer_;
  std::string pending_;
};

}  // namespace bitfleet::tokenizer

// Text <-> token ids for the vocabularies of GGUF models: SentencePiece-style BPE ("llama")
// and byte-level BPE ("gpt2") with the pre-tokenizer named by tokenizer.ggml.pre. Reproduces
// llama.cpp's tokenizers exactly (checked against its published test vectors); the policies
// (special tokens, invalid UTF-8, decoding) are described in docs/tokenizer.md.
//
// Typical use:
//   BF_ASSIGN_OR_RETURN(auto tok, LoadTokenizerFromGguf(path));   // gguf_vocab_loader.h
//   BF_ASSIGN_OR_RETURN(std::vector<TokenId> ids, tok->Encode(prompt));
//   IncrementalDecoder stream(*tok, {.strip_leading_space = false});  // incremental_decoder.h
//
// A Tokenizer is immutable after Create: every method is const and thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "model/tokenizer/bpe_encoder.h"
#include "model/tokenizer/decoder.h"
#include "model/tokenizer/pre_tokenizer.h"
#include "model/tokenizer/special_tokens.h"
#include "model/tokenizer/spm_encoder.h"
#include "model/tokenizer/token_index.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

// No text longer than this is ever encoded, whatever EncodeOptions says (offsets are 32-bit
// and ▁-escaping can triple the size).
inline constexpr size_t kMaxEncodeBytesLimit = size_t{1} << 30;

struct EncodeOptions {
  // Add BOS / EOS where the vocabulary asks for them (tokenizer.ggml.add_bos_token / eos).
  bool add_special = true;
  // Which special tokens written in the text are recognised (default: none).
  SpecialTokenParsing special_tokens = SpecialTokenParsing::kNone;
  // Longer texts fail with ResourceExhausted before any work (capped at kMaxEncodeBytesLimit).
  // 8 MiB is far beyond any context window; a pathological input (one multi-MB word) needs
  // up to ~70 bytes of working memory per input byte, so keep this bounded.
  size_t max_input_bytes = size_t{8} << 20;
};

struct EncodeScratch;  // tokenizer.cc

class Tokenizer {
 public:
  // Validates `vocab` (ValidateVocab), infers missing token types, compiles the pre-tokenizer
  // and the merge table. Errors are InvalidArgument and name what is wrong.
  static StatusOr<std::unique_ptr<Tokenizer>> Create(Vocab vocab);

  // Text -> ids. Invalid UTF-8 is first replaced, one U+FFFD per maximal ill-formed subpart
  // (docs/tokenizer.md); everything else is lossless.
  StatusOr<std::vector<TokenId>> Encode(std::string_view text, const EncodeOptions& options = {}) const;

  // Ids -> bytes (valid UTF-8 unless the ids spell a broken sequence with byte tokens).
  // InvalidArgument for an id outside the vocabulary.
  StatusOr<std::string> Decode(std::span<const TokenId> ids, const DecodeOptions& options = {}) const;

  const Vocab& vocab() const { return vocab_; }
  size_t size() const { return vocab_.tokens.size(); }
  TokenizerModel model() const { return vocab_.model; }
  // The pre-tokenizer's canonical name ("" for SentencePiece).
  std::string_view pre_tokenizer_name() const;

  TokenId bos() const { return vocab_.special.bos; }
  TokenId eos() const { return vocab_.special.eos; }
  TokenId unk() const { return vocab_.special.unk; }
  // Tokens that end generation: EOS, EOT, EOM and the well-known end-of-turn tokens the vocab
  // has (<|eot_id|>, <|im_end|>, <|endoftext|>, ...). Sorted.
  const std::vector<TokenId>& end_of_generation() const { return end_of_generation_; }
  bool IsEndOfGeneration(TokenId id) const;

  // What DecodeOptions::strip_leading_space means when unset.
  bool strips_leading_space_by_default() const;
  const PieceTable& pieces() const { return *pieces_; }
  // The trie Encode finds special-token text with (for callers that partition text themselves).
  const SpecialTokenMatcher& special_tokens() const { return *specials_; }

 private:
  Tokenizer() = default;
  Status EncodeText(std::string_view text, bool after_special, EncodeScratch* scratch,
                    std::vector<TokenId>* out) const;

  Vocab vocab_;
  std::unique_ptr<TokenIndex> index_;
  std::unique_ptr<SpecialTokenMatcher> specials_;
  std::unique_ptr<PieceTable> pieces_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;  // byte-level BPE only
  std::unique_ptr<BpeEncoder> bpe_;              // byte-level BPE only
  std::unique_ptr<SpmEncoder> spm_;              // SentencePiece only
  std::vector<TokenId> end_of_generation_;
};

}  // namespace bitfleet::tokenizer

// SentencePiece-style BPE (tokenizer.ggml.model = "llama"), as llama.cpp's llm_tokenizer_spm:
// the text (spaces already escaped to ▁) starts as one symbol per UTF-8 character; the
// adjacent pair whose concatenation is a token with the highest score is merged (leftmost
// first among equal scores) until no pair forms a token. A symbol that is not a token is
// spelled with byte-fallback tokens <0xNN>, one per byte.
//
// Speed: a merge can only join characters c1 c2 if some token contains "c1c2". The text is
// cut at every boundary no token spans and each segment is merged on its own; merges in
// different segments never interact, so the result is exactly that of one pass over the whole
// text, with small heaps instead of one the size of the input.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "model/tokenizer/token_index.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

class SpmEncoder {
 public:
  // Reusable working memory for Encode (see BpeEncoder::Scratch).
  struct Scratch {
    struct Symbol {
      uint32_t begin;
      uint32_t length;  // 0 once merged into its left neighbour
      int32_t prev;
      int32_t next;
    };
    struct Candidate {
      float score;
      int32_t left;
      int32_t right;
      uint32_t length;  // bytes of left + right when queued; a mismatch marks it stale
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
  };

  // `vocab` and `index` must outlive the encoder.
  SpmEncoder(const Vocab& vocab, const TokenIndex& index);

  // Appends the ids of `text` (valid UTF-8, at most 4 GiB, spaces escaped as ▁). A byte with
  // neither a <0xNN> token nor a one-byte token makes its character one UNK (dropped when
  // the vocab has no UNK).
  void Encode(std::string_view text, Scratch* scratch, std::vector<TokenId>* out) const;

 private:
  void PushCandidate(std::string_view text, int32_t left, int32_t right, Scratch* scratch) const;
  // Merges scratch->symbols (one segment) and appends its ids.
  void EncodeSegment(std::string_view text, Scratch* scratch, std::vector<TokenId>* out) const;
  static uint64_t PairKey(uint32_t first, uint32_t second) { return (uint64_t{first} << 32) | second; }

  const Vocab& vocab_;
  const TokenIndex& index_;
  TokenId byte_token_[256];
  absl::flat_hash_set<uint64_t> inner_pairs_;  // adjacent code point pairs inside text tokens
};

}  // namespace bitfleet::tokenizer

// Byte-level BPE (tokenizer.ggml.model = "gpt2"): a pre-tokenized word's bytes start as one
// symbol each (the token of its GPT-2-mapped character), then the adjacent pair with the best
// (lowest) merge rank is merged, leftmost first among equal ranks, until no pair has a merge.
// Equivalent to llama.cpp's llm_tokenizer_bpe and Hugging Face's BPE model, but works on token
// ids instead of strings: merge lookups are one hash probe on a pair of ids.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/status.h"
#include "model/tokenizer/token_index.h"
#include "model/tokenizer/vocab.h"
#include "model/tokenizer/word_cache.h"

namespace bitfleet::tokenizer {

class BpeEncoder {
 public:
  // Reusable working memory for EncodeWord, so steady-state encoding does not allocate.
  // One per thread (Tokenizer::Encode keeps one per call).
  struct Scratch {
    struct Symbol {
      TokenId id;  // kDead once merged into its left neighbour
      int32_t prev;
      int32_t next;
    };
    struct Candidate {
      int32_t rank;
      int32_t left;
      int32_t right;
      TokenId left_id;
      TokenId right_id;
      TokenId result;
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    std::string mapped;
  };

  // Parses `vocab.merges` ("left right", rank = position). InvalidArgument when a line has no
  // separating space or names a token (either side, or their concatenation) that is not in
  // the vocabulary: such a merge could never apply to token ids and means a corrupt file.
  static StatusOr<std::unique_ptr<BpeEncoder>> Create(const Vocab& vocab, const TokenIndex& index,
                                                      bool ignore_merges);

  // Appends the ids of `word` (raw UTF-8 bytes, one pre-tokenizer piece). Bytes whose mapped
  // character is not a token become the UNK token when the vocab has one, else are dropped
  // (as llama.cpp and Hugging Face do). Results of short words are cached (WordCache).
  // Thread-safe given a per-thread `scratch`.
  void EncodeWord(std::string_view word, Scratch* scratch, std::vector<TokenId>* out) const;

  size_t merge_count() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    TokenId result;
  };
  static uint64_t PairKey(TokenId left, TokenId right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void PushCandidate(int32_t left, int32_t right, Scratch* scratch) const;
  void MergeWord(std::string_view word, Scratch* scratch, std::vector<TokenId>* out) const;

  BpeEncoder(const TokenIndex& index) : index_(index) {}
  const TokenIndex& index_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  TokenId byte_token_[256];  // token of each byte's mapped character, or kNoToken
  TokenId unk_ = kNoToken;
  bool ignore_merges_ = false;
  mutable WordCache cache_;  // a cache: logically const
};

}  // namespace bitfleet::tokenizer

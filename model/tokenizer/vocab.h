// A tokenizer vocabulary as plain data: what a GGUF file's tokenizer.ggml.* metadata holds,
// without any file format attached. Tests build one by hand; gguf_vocab_loader.h fills one
// from a model file. Tokenizer::Create (tokenizer.h) validates it and builds the indexes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bitfleet::tokenizer {

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

// tokenizer.ggml.model.
enum class TokenizerModel {
  kSentencePiece,  // "llama": score-driven bigram merges over ▁-escaped text, byte fallback
  kByteLevelBpe,   // "gpt2": regex pre-tokenizer, GPT-2 byte mapping, ranked merges
};
std::string_view TokenizerModelName(TokenizerModel model);

// tokenizer.ggml.token_type, numbered as in GGUF / llama.cpp.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,       // <s>, </s>, <|eot_id|>: never produced from text unless parse-special
  kUserDefined = 4,   // added tokens matched as whole strings
  kUnused = 5,
  kByte = 6,          // <0xNN> byte fallback pieces
};
inline constexpr int32_t kMaxTokenType = 6;

// Ids of the tokens with a role; kNoToken when the vocabulary has none.
struct SpecialTokenIds {
  TokenId bos = kNoToken;
  TokenId eos = kNoToken;
  TokenId unk = kNoToken;
  TokenId pad = kNoToken;
  TokenId sep = kNoToken;
  TokenId eot = kNoToken;  // end of turn (chat models)
  TokenId eom = kNoToken;  // end of message (tool calls)
};

struct Vocab {
  TokenizerModel model = TokenizerModel::kSentencePiece;
  // tokenizer.ggml.pre: the pre-tokenizer of a byte-level BPE vocab ("gpt-2", "llama-bpe",
  // ...; see pre_tokenizer.h). Empty means "default". Ignored for SentencePiece.
  std::string pre;
  std::vector<std::string> tokens;  // index = token id
  std::vector<float> scores;        // empty or one per token; SentencePiece merge priority
  std::vector<TokenType> types;     // empty (inferred, see InferTokenTypes) or one per token
  std::vector<std::string> merges;  // byte-level BPE: "left right", best (rank 0) first
  SpecialTokenIds special;
  bool add_bos = false;           // Encode adds BOS (when EncodeOptions::add_special)
  bool add_eos = false;           // ... and EOS
  bool add_space_prefix = false;  // SentencePiece: prepend ▁ to text (and strip it on decode)
};

// Fills `vocab->types` when it is empty, the way files without tokenizer.ggml.token_type
// (llama2.c conversions) mean it: "<0xNN>" pieces are bytes, the UNK id is unknown, BOS/EOS
// are control tokens, everything else is normal.
void InferTokenTypes(Vocab* vocab);

// Checks the invariants Tokenizer::Create relies on: array lengths agree, ids in range, no
// duplicate token strings, token types known. Errors name the offending entry.
Status ValidateVocab(const Vocab& vocab);

}  // namespace bitfleet::tokenizer

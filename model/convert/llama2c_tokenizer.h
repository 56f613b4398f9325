// llama2.c tokenizer files (tokenizer.bin / tok512.bin) and the SentencePiece-style GGUF
// tokenizer metadata llama.cpp reads for tokenizer.ggml.model = "llama".
//
// File layout (little-endian): int32 max_token_length, then for each of the n_vocab tokens
// (the count comes from the checkpoint header, the file does not store it): float32 score,
// int32 byte length, the bytes. llama2.c's exporter replaced SentencePiece's U+2581 "▁" by a
// space and wrote BOS/EOS as "\n<s>\n" / "\n</s>\n"; the conversion undoes both.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/gguf/gguf.h"

namespace bitfleet::convert {

// SentencePiece token types as stored in tokenizer.ggml.token_type (llama.cpp's
// llama_token_type numbering).
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Fixed ids of every llama2.c / Llama 2 SentencePiece vocabulary.
inline constexpr uint32_t kUnknownId = 0;
inline constexpr uint32_t kBosId = 1;
inline constexpr uint32_t kEosId = 2;

// A SentencePiece vocabulary in GGUF form: token text with "▁" for spaces, scores, types.
struct SentencePieceVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<TokenType> types;
};

// Parses a llama2.c tokenizer holding exactly `n_vocab` tokens. Hostile input: every length
// is checked against the file and max_token_length, scores must be finite, and bytes left
// over after the last token are an error (the tokenizer belongs to another vocabulary).
StatusOr<SentencePieceVocab> ReadLlama2cTokenizer(std::span<const uint8_t> bytes, uint32_t n_vocab);

// Writes tokenizer.ggml.* for a Llama-style SentencePiece vocabulary: model "llama", pre
// "default", tokens, scores, token_type, bos/eos/unk ids, add_bos_token = true,
// add_eos_token = false, add_space_prefix = true.
void WriteLlamaTokenizer(const SentencePieceVocab& vocab, gguf::GgufWriter& writer);

}  // namespace bitfleet::convert

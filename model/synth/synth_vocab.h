// A deterministic SentencePiece-style ("llama" tokenizer model) vocabulary for synthetic models,
// so text runs end to end through tokenize -> model -> detokenize.
//
// Layout (ids): 0 <unk> (UNKNOWN), 1 <s> (CONTROL), 2 </s> (CONTROL), 3..258 <0x00>..<0xFF>
// (BYTE, the fallback for any byte no piece covers), then NORMAL pieces: "▁" (U+2581, the space
// marker), single printable ASCII characters, then common English words with the "▁" prefix and
// all their prefixes ("▁t", "▁th", "▁the"), so greedy pair merging can reach every word. When
// the word list runs out, lowercase letter strings ("▁aa", "aa", "▁aaa", ...) fill the vocabulary
// up to n_vocab in a fixed order. Scores fall by 1 per piece (earlier pieces merge first).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/gguf/gguf.h"

namespace bitfleet::synth {

// llama.cpp token types (llama_token_type).
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

inline constexpr int32_t kUnkId = 0;
inline constexpr int32_t kBosId = 1;
inline constexpr int32_t kEosId = 2;
inline constexpr uint32_t kFirstByteId = 3;
inline constexpr uint32_t kSpecialAndByteTokens = 259;

struct SynthVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // TokenType values
};

// Builds exactly `n_vocab` unique tokens; InvalidArgument when n_vocab < 259.
StatusOr<SynthVocab> BuildSynthVocab(uint32_t n_vocab);

// Writes tokenizer.ggml.{model,tokens,scores,token_type,bos_token_id,eos_token_id,
// unknown_token_id,add_bos_token,add_eos_token,add_space_prefix}.
void WriteTokenizer(const SynthVocab& vocab, gguf::GgufWriter& writer);

}  // namespace bitfleet::synth

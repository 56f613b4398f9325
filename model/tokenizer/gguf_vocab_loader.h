// Reads a tokenizer from GGUF metadata (tokenizer.ggml.*), as written by llama.cpp's and
// bitnet.cpp's converters and by llama2.c conversions. Works on vocab-only files (no tensors):
// nothing but the metadata is read.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

// Metadata keys, as named by the GGUF spec (note the spec's spelling of "seperator").
inline constexpr std::string_view kKeyModel = "tokenizer.ggml.model";
inline constexpr std::string_view kKeyPre = "tokenizer.ggml.pre";
inline constexpr std::string_view kKeyTokens = "tokenizer.ggml.tokens";
inline constexpr std::string_view kKeyScores = "tokenizer.ggml.scores";
inline constexpr std::string_view kKeyTokenType = "tokenizer.ggml.token_type";
inline constexpr std::string_view kKeyMerges = "tokenizer.ggml.merges";
inline constexpr std::string_view kKeyBosId = "tokenizer.ggml.bos_token_id";
inline constexpr std::string_view kKeyEosId = "tokenizer.ggml.eos_token_id";
inline constexpr std::string_view kKeyUnkId = "tokenizer.ggml.unknown_token_id";
inline constexpr std::string_view kKeyPadId = "tokenizer.ggml.padding_token_id";
inline constexpr std::string_view kKeySepId = "tokenizer.ggml.seperator_token_id";
inline constexpr std::string_view kKeyEotId = "tokenizer.ggml.eot_token_id";
inline constexpr std::string_view kKeyEomId = "tokenizer.ggml.eom_token_id";
inline constexpr std::string_view kKeyAddBos = "tokenizer.ggml.add_bos_token";
inline constexpr std::string_view kKeyAddEos = "tokenizer.ggml.add_eos_token";
inline constexpr std::string_view kKeyAddSpacePrefix = "tokenizer.ggml.add_space_prefix";

// Builds a Vocab from `file`'s metadata. Defaults follow llama.cpp: SentencePiece vocabs have
// BOS=1, EOS=2, UNK=0, add_bos and add_space_prefix on unless the file says otherwise;
// byte-level BPE vocabs take add_bos from their pre-tokenizer (on for Llama 3). Errors:
// NotFound for a missing model/tokens key, Unimplemented for other tokenizer models (bert,
// t5, rwkv, ...), InvalidArgument for wrongly typed keys and for a BOS/EOS id outside the
// vocabulary. Other out-of-range special ids (pad, sep, ...) are dropped with a warning, as
// llama.cpp does, since released files have them. This reads the tokenizer alone; that its
// token count equals the model's embedding rows is checked with the model's config
// (model::ReadModelConfig / ValidateTensors, via CheckTokenizerMatchesEmbedding).
StatusOr<Vocab> LoadVocabFromGguf(const gguf::GgufFile& file);

// Opens `path` and builds its Tokenizer (LoadVocabFromGguf + Tokenizer::Create).
StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromGguf(const std::string& path);

}  // namespace bitfleet::tokenizer

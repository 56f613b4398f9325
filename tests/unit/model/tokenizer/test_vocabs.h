// Small hand-made vocabularies for tokenizer unit tests (no GGUF file needed).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer::testing {

// SentencePiece: <unk>=0, <s>=1, </s>=2, <0x00>..<0xFF> = 3..258, then the pieces of
// "hello world" with scores chosen so "hello world" encodes as ▁hello ▁world, and a
// user-defined token <|user|>. add_bos and add_space_prefix on.
Vocab MakeSpmVocab();

// Byte-level BPE (pre-tokenizer `pre`): the 256 byte characters as ids 0..255 (in byte
// order), merges building "hello", "Ġworld", "ll", "Ġ!" and a control token <|endoftext|>.
Vocab MakeBpeVocab(const std::string& pre = "gpt-2");

// The id of `text` in `vocab` (-1 when absent).
TokenId IdOf(const Vocab& vocab, const std::string& text);

// Tokenizer::Create or a test failure.
std::unique_ptr<Tokenizer> MakeTokenizer(Vocab vocab);

}  // namespace bitfleet::tokenizer::testing

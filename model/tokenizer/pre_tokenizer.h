// Pre-tokenizers of byte-level BPE vocabularies, chosen by tokenizer.ggml.pre. Each is a list
// of split regexes applied in sequence, each splitting every piece the previous one produced
// (as llama.cpp's llama-vocab.cpp does, reproducing the `Sequence` of `Split` pre-tokenizers
// in the model's Hugging Face tokenizer.json). The table lives in pre_tokenizer_specs.cc and
// docs/tokenizer.md lists it.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "model/tokenizer/split_regex.h"
#include "model/tokenizer/text_range.h"

namespace bitfleet::tokenizer {

struct PreTokenizerSpec {
  std::vector<std::string_view> names;    // names[0] is canonical, the rest are aliases
  std::vector<std::string_view> regexes;  // applied in order
  bool ignore_merges = false;  // a word that is itself a token is emitted whole (Llama 3)
  bool add_bos = false;        // default of add_bos when the file does not say
};

// nullptr for an unknown name. An empty name means "default".
const PreTokenizerSpec* FindPreTokenizerSpec(std::string_view name);
// Every accepted name (canonical names and aliases), for help texts and errors.
std::vector<std::string_view> PreTokenizerNames();

class PreTokenizer {
 public:
  // InvalidArgument for an unknown name (the message lists the known ones).
  static StatusOr<std::unique_ptr<PreTokenizer>> Create(std::string_view name);

  // Splits `text` (valid UTF-8) into words: appends ranges that tile `text` exactly, in
  // order. Thread-safe.
  Status Split(std::string_view text, std::vector<TextRange>* words) const;
  // As Split, but hands each word to `sink` in order as it is found, without collecting all
  // of them first (Encode's path: no word list for a multi-MB text).
  Status ForEachWord(std::string_view text, absl::FunctionRef<void(TextRange)> sink) const;

  const PreTokenizerSpec& spec() const { return *spec_; }

 private:
  PreTokenizer() = default;
  const PreTokenizerSpec* spec_ = nullptr;
  std::vector<std::unique_ptr<SplitRegex>> regexes_;
};

}  // namespace bitfleet::tokenizer

#include "model/tokenizer/pre_tokenizer.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bitfleet::tokenizer {


StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(std::string_view name) {
  const PreTokenizerSpec* spec = FindPreTokenizerSpec(name);
  if (spec == nullptr) {
    std::vector<std::string> names;
    for (std::string_view n : PreTokenizerNames()) names.emplace_back(n);
    return absl::InvalidArgumentError(absl::StrCat("unknown pre-tokenizer '", std::string(name),
                                                   "' (known: ", absl::StrJoin(names, ", "), ")"));
  }
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  pre->spec_ = spec;
  for (std::string_view pattern : spec->regexes) {
    BF_ASSIGN_OR_RETURN(auto regex, SplitRegex::Compile(pattern));
    pre->regexes_.push_back(std::move(regex));
  }
  return pre;
}

Status PreTokenizer::Split(std::string_view text, std::vector<TextRange>* words) const {
  return ForEachWord(text, [words](TextRange word) { words->push_back(word); });
}

Status PreTokenizer::ForEachWord(std::string_view text, absl::FunctionRef<void(TextRange)> sink) const {
  if (text.empty()) return absl::OkStatus();
  // Every regex but the last splits the pieces of the previous one into a list (double
  // buffered); the last one streams its ranges straight to `sink`.
  std::vector<TextRange> current = {{0, text.size()}};
  std::vector<TextRange> next;
  for (size_t i = 0; i + 1 < regexes_.size(); ++i) {
    next.clear();
    BF_RETURN_IF_ERROR(regexes_[i]->Split(text, current, &next));
    current.swap(next);
  }
  for (const TextRange& piece : current) BF_RETURN_IF_ERROR(regexes_.back()->SplitOne(text, piece, sink));
  return absl::OkStatus();
}

}  // namespace bitfleet::tokenizer

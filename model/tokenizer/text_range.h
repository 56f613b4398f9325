// A byte range [begin, end) of a text the tokenizer works on.
#pragma once

#include <cstddef>
#include <string_view>

namespace bitfleet::tokenizer {

struct TextRange {
  size_t begin = 0;
  size_t end = 0;

  size_t size() const { return end - begin; }
  std::string_view Of(std::string_view text) const { return text.substr(begin, end - begin); }
};

}  // namespace bitfleet::tokenizer

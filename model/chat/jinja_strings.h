// Python's str semantics on UTF-8 text, for the chat-template interpreter: characters are code
// points (a malformed byte counts as one), whitespace is str.isspace()'s, and case mapping
// covers ASCII and Latin-1 letters (others are left as they are). Throws JinjaError where
// Python raises.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/chat/jinja_value.h"

namespace bitfleet::chat::jinja {

// The string's characters.
std::vector<std::string_view> Characters(std::string_view s);
// str.isspace() of one character.
bool IsPySpace(std::string_view c);
// str.upper() / str.lower().
std::string MapCase(std::string_view s, bool upper);
// str.title(): a cased character after an uncased one is upper-cased, others lowered.
std::string PyTitle(std::string_view s);
// str.capitalize().
std::string PyCapitalize(std::string_view s);
// Jinja's title filter: each word (split at whitespace, '-' and opening brackets) capitalized.
std::string JinjaTitle(std::string_view s);
// str.strip / lstrip / rstrip; `chars` null, None or Undefined strips whitespace.
std::string PyStrip(std::string_view s, const Value* chars, bool left, bool right);
// str.split(sep=None, maxsplit=-1), as a list of strings; `sep` null or None splits at whitespace.
Value PySplit(std::string_view s, const Value* sep, int64_t maxsplit);
// str.replace(old, new, count); count < 0: all.
std::string PyReplace(std::string_view s, std::string_view from, std::string_view to, int64_t count);
// str.startswith / str.endswith with a string or a tuple of strings.
bool StartsOrEnds(std::string_view s, const Value& affix, bool start);

}  // namespace bitfleet::chat::jinja

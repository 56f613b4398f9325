#include "model/chat/jinja_strings.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/tokenizer/utf8.h"

namespace bitfleet::chat::jinja {
namespace {

// Byte length of the UTF-8 sequence starting with `lead` (1 for stray bytes).

size_t SequenceLength(unsigned char lead) {
  if (lead >= 0xF0 && lead < 0xF8) return 4;
  if (lead >= 0xE0) return lead < 0xF0 ? 3 : 1;
  if (lead >= 0xC0) return 2;
  return 1;
}

// The code point of one character.
uint32_t CodePoint(std::string_view c) {
  const auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(c[i])); };
  switch (c.size()) {
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    case 4:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    default:
      return b(0);
  }
}

// One character upper- or lower-cased (ASCII and Latin-1; 'ß' upper-cases to "SS").
std::string CaseChar(std::string_view c, bool upper) {
  if (c.size() == 1) {
    const char ch = c[0];
    if (upper && ch >= 'a' && ch <= 'z') return std::string(1, static_cast<char>(ch - 32));
    if (!upper && ch >= 'A' && ch <= 'Z') return std::string(1, static_cast<char>(ch + 32));
    return std::string(c);
  }
  const uint32_t cp = CodePoint(c);
  uint32_t mapped = cp;
  if (upper && cp >= 0xE0 && cp <= 0xFE && cp != 0xF7) mapped = cp - 0x20;
  if (upper && cp == 0xFF) mapped = 0x178;
  if (upper && cp == 0xDF) return "SS";
  if (!upper && cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) mapped = cp + 0x20;
  if (!upper && cp == 0x178) mapped = 0xFF;
  if (mapped == cp) return std::string(c);
  std::string out;
  tokenizer::AppendUtf8(mapped, &out);
  return out;
}

bool IsCased(std::string_view c) {
  if (c.size() == 1) return (c[0] >= 'a' && c[0] <= 'z') || (c[0] >= 'A' && c[0] <= 'Z');
  const uint32_t cp = CodePoint(c);
  return (cp >= 0xC0 && cp <= 0xFF && cp != 0xD7 && cp != 0xF7) || cp == 0x178;
}

Value StringList(std::vector<std::string> parts) {
  ValueList items;
  for (std::string& p : parts) items.push_back(Value::String(std::move(p)));
  return Value::List(std::move(items));
}


}  // namespace

std::vector<std::string_view> Characters(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(SequenceLength(static_cast<unsigned char>(s[i])), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool IsPySpace(std::string_view c) {
  const uint32_t cp = CodePoint(c);
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::string MapCase(std::string_view s, bool upper) {
  std::string out;
  for (std::string_view c : Characters(s)) out += CaseChar(c, upper);
  return out;
}

std::string PyTitle(std::string_view s) {
  std::string out;
  bool previous_cased = false;
  for (std::string_view c : Characters(s)) {
    out += CaseChar(c, !previous_cased);
    previous_cased = IsCased(c);
  }
  return out;
}

std::string PyCapitalize(std::string_view s) {
  std::vector<std::string_view> chars = Characters(s);
  std::string out;
  for (size_t i = 0; i < chars.size(); ++i) out += CaseChar(chars[i], i == 0);
  return out;
}

std::string JinjaTitle(std::string_view s) {
  std::string out;
  bool word_start = true;
  for (std::string_view c : Characters(s)) {
    const bool separator = IsPySpace(c) || c == "-" || c == "(" || c == "{" || c == "[" || c == "<";
    out += separator ? std::string(c) : CaseChar(c, word_start);
    word_start = separator;
  }
  return out;
}

std::string PyStrip(std::string_view s, const Value* chars, bool left, bool right) {
  std::vector<std::string_view> cs = Characters(s);
  std::vector<std::string_view> set;
  const bool whitespace = chars == nullptr || chars->is_none() || chars->is_undefined();
  if (!whitespace) {
    if (!chars->is_string()) Fail("strip arg must be None or str");
    set = Characters(chars->string());
  }
  const auto strip = [&](std::string_view c) {
    return whitespace ? IsPySpace(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t begin = 0;
  size_t end = cs.size();
  while (left && begin < end && strip(cs[begin])) ++begin;
  while (right && end > begin && strip(cs[end - 1])) --end;
  std::string out;
  for (size_t i = begin; i < end; ++i) out += cs[i];
  return out;
}

Value PySplit(std::string_view s, const Value* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_none()) {
    std::vector<std::string_view> cs = Characters(s);
    size_t i = 0;
    while (true) {
      while (i < cs.size() && IsPySpace(cs[i])) ++i;
      if (i == cs.size()) break;
      std::string part;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        for (; i < cs.size(); ++i) part += cs[i];
        // Trailing whitespace stays only within the remainder; Python strips it at the end.
        parts.push_back(PyStrip(part, nullptr, false, true));
        break;
      }
      for (; i < cs.size() && !IsPySpace(cs[i]); ++i) part += cs[i];
      parts.push_back(std::move(part));
    }
    return StringList(std::move(parts));
  }
  if (!sep->is_string()) Fail("must be str or None");
  const std::string& d = sep->string();
  if (d.empty()) Fail("empty separator");
  size_t start = 0;
  while (true) {
    const size_t at = s.find(d, start);
    if (at == std::string_view::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) break;
    parts.emplace_back(s.substr(start, at - start));
    start = at + d.size();
  }
  parts.emplace_back(s.substr(start));
  return StringList(std::move(parts));
}

std::string PyReplace(std::string_view s, std::string_view from, std::string_view to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` around every character
    std::vector<std::string_view> cs = Characters(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cs.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (i < cs.size()) out += cs[i];
    }
    CheckStringSize(out.size());
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(from, start);
    if (at == std::string_view::npos) break;
    out.append(s.substr(start, at - start));
    out.append(to);
    CheckStringSize(out.size());
    start = at + from.size();
    ++done;
  }
  out += s.substr(start);
  return out;
}

bool StartsOrEnds(std::string_view s, const Value& affix, bool start) {
  const auto one = [&](const Value& v) {
    if (!v.is_string()) Fail("startswith / endswith take a str or a tuple of str");
    const std::string& a = v.string();
    return start ? s.substr(0, a.size()) == a : (s.size() >= a.size() && s.substr(s.size() - a.size()) == a);
  };
  if (affix.is_list()) {
    for (const Value& v : affix.list()) {
      if (one(v)) return true;
    }
    return false;
  }
  return one(affix);
}

}  // namespace bitfleet::chat::jinja

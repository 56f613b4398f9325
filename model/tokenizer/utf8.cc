#include "model/tokenizer/utf8.h"

namespace bitfleet::tokenizer {
namespace {

bool InRange(uint8_t b, uint8_t lo, uint8_t hi) { return b >= lo && b <= hi; }

}  // namespace

Utf8Scan ScanUtf8(std::string_view s) {
  const uint8_t b0 = static_cast<uint8_t>(s[0]);
  if (b0 < 0x80) return {Utf8Scan::Kind::kValid, 1, b0};

  // Table 3-7 of the Unicode standard: the allowed range of the second byte depends on the
  // lead byte (this excludes overlongs, surrogates and code points above U+10FFFF); every
  // later byte is 80..BF.
  int length = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  uint32_t cp = 0;
  if (InRange(b0, 0xC2, 0xDF)) {
    length = 2;
    cp = b0 & 0x1F;
  } else if (InRange(b0, 0xE0, 0xEF)) {
    length = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (InRange(b0, 0xF0, 0xF4)) {
    length = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Scan::Kind::kInvalid, 1, 0};  // 80..C1, F5..FF never start a sequence
  }

  for (int i = 1; i < length; ++i) {
    if (static_cast<size_t>(i) >= s.size()) return {Utf8Scan::Kind::kIncomplete, i, 0};
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if (!InRange(b, lo, hi)) return {Utf8Scan::Kind::kInvalid, i, 0};
    cp = (cp << 6) | (b & 0x3F);
    lo = 0x80;
    hi = 0xBF;
  }
  return {Utf8Scan::Kind::kValid, length, cp};
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {  // ASCII fast path
      ++i;
      continue;
    }
    const Utf8Scan scan = ScanUtf8(s.substr(i));
    if (scan.kind != Utf8Scan::Kind::kValid) return false;
    i += scan.length;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    const Utf8Scan scan = ScanUtf8(s.substr(i));
    if (scan.kind == Utf8Scan::Kind::kValid) {
      out.append(s.substr(i, scan.length));
    } else {
      out.append(kReplacementChar);  // kIncomplete here means the input ends mid-sequence
    }
    i += scan.length;
  }
  return out;
}

}  // namespace bitfleet::tokenizer

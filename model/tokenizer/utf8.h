// UTF-8 helpers shared by the encoders and the decoders. Ill-formed input is handled the way
// the Unicode standard recommends (§3.9, "U+FFFD substitution of maximal subparts"), so the
// whole-text and the streaming decoders replace exactly the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace bitfleet::tokenizer {

// UTF-8 of U+FFFD REPLACEMENT CHARACTER.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// What the bytes at the start of a (non-empty) buffer hold.
struct Utf8Scan {
  enum class Kind {
    kValid,       // a complete, well-formed sequence of `length` bytes (1..4)
    kIncomplete,  // the buffer ends inside a sequence that is well-formed so far
    kInvalid,     // `length` bytes (>= 1) form a maximal ill-formed subpart
  };
  Kind kind;
  int length;
  uint32_t code_point;  // meaningful for kValid only
};

// Inspects the sequence starting at s[0]. `s` must not be empty.
Utf8Scan ScanUtf8(std::string_view s);

// Appends the UTF-8 encoding of `code_point` (must be a Unicode scalar value).
void AppendUtf8(uint32_t code_point, std::string* out);

bool IsValidUtf8(std::string_view s);

// Returns `s` with every maximal ill-formed subpart (and an incomplete sequence at the very
// end) replaced by U+FFFD. Well-formed input is returned unchanged.
std::string SanitizeUtf8(std::string_view s);

}  // namespace bitfleet::tokenizer

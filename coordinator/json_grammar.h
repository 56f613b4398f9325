// A byte-at-a-time JSON recognizer (RFC 8259) for constrained decoding: JsonState::Advance
// accepts a byte only if the bytes so far stay a prefix of some JSON text whose top-level value
// is an object (OpenAI's response_format json_object), so a sampler masked by it can always
// finish a valid document.
//
// Beyond the RFC, to keep a masked model from running away: containers nest at most kMaxDepth
// deep, and at most kMaxWhitespaceRun whitespace bytes may follow one another outside strings.
// Strings hold well-formed UTF-8 (no overlong forms or surrogates checked: leading and
// continuation bytes only) and no raw control characters.
//
// The state is small and trivially copyable (the mask search copies it per trie node) and
// comparable (masks are cached per state).
#pragma once

#include <array>
#include <cstdint>

namespace bitfleet::coordinator {

class JsonState {
 public:
  static constexpr int kMaxDepth = 32;
  // 64: room for a newline and 4-space indentation 15 levels deep.
  static constexpr int kMaxWhitespaceRun = 64;

  // Takes one more byte; false (and the state unchanged) if no JSON object text continues so.
  bool Advance(uint8_t byte);
  // The top-level object has closed: the text is a whole document.
  bool complete() const { return mode_ == Mode::kDone; }

  bool operator==(const JsonState&) const = default;
  // A hash of the whole state (mask cache key).
  uint64_t Hash() const;

 private:
  enum class Mode : uint8_t {
    kStart,        // before the top-level object: whitespace, then '{'
    kValue,        // a value is expected (after ':' or ',' in an array, or '[')
    kValueOrEnd,   // after '[': a value or ']'
    kKeyOrEnd,     // after '{': a key string or '}'
    kKey,          // after ',' in an object: a key string
    kColon,        // after a key
    kCommaOrEnd,   // after a value inside a container: ',' or the container's close
    kString,       // inside a string (key or value: in_key_)
    kEscape,       // after '\' in a string
    kUnicode,      // inside \uXXXX (hex_left_ digits to go)
    kNumber,       // inside a number (number_ sub-state)
    kLiteral,      // inside true / false / null (literal_, literal_pos_)
    kDone,         // the top-level object closed
  };
  // Number sub-states, by what was read last.
  enum class Num : uint8_t { kMinus, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpInt };

  // What a finished value leaves: ',' or a close inside a container, done at the top.
  void ValueDone();
  bool StartValue(uint8_t byte);
  bool Close(uint8_t byte);
  bool StringByte(uint8_t byte);
  bool NumberByte(uint8_t byte);
  bool Whitespace(uint8_t byte);

  Mode mode_ = Mode::kStart;
  Num number_ = Num::kMinus;
  bool in_key_ = false;
  uint8_t literal_ = 0;       // 0 true, 1 false, 2 null
  uint8_t literal_pos_ = 0;   // bytes of it matched
  uint8_t hex_left_ = 0;
  uint8_t utf8_left_ = 0;     // continuation bytes the current character still needs
  uint8_t whitespace_run_ = 0;
  uint8_t depth_ = 0;
  std::array<uint8_t, kMaxDepth> stack_{};  // '{' or '[' per open container
};

}  // namespace bitfleet::coordinator

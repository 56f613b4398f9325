#include "coordinator/json_grammar.h"

#include <cstring>
#include <string_view>

namespace bitfleet::coordinator {
namespace {

constexpr std::string_view kLiterals[] = {"true", "false", "null"};

bool IsWhitespace(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool IsDigit(uint8_t b) { return b >= '0' && b <= '9'; }
bool IsHex(uint8_t b) { return IsDigit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }

}  // namespace

uint64_t JsonState::Hash() const {
  // FNV-1a over the fields that matter (the stack only up to the depth: deeper bytes are stale).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
  for (uint8_t b : {static_cast<uint8_t>(mode_), static_cast<uint8_t>(number_), static_cast<uint8_t>(in_key_),
                    literal_, literal_pos_, hex_left_, utf8_left_, whitespace_run_, depth_}) {
    mix(b);
  }
  for (int i = 0; i < depth_; ++i) mix(stack_[i]);
  return h;
}

bool JsonState::Whitespace(uint8_t byte) {
  if (!IsWhitespace(byte) || whitespace_run_ >= kMaxWhitespaceRun) return false;
  ++whitespace_run_;
  return true;
}

void JsonState::ValueDone() {
  mode_ = depth_ == 0 ? Mode::kDone : Mode::kCommaOrEnd;
}

bool JsonState::StartValue(uint8_t byte) {
  switch (byte) {
    case '{':
    case '[':
      if (depth_ >= kMaxDepth) return false;
      stack_[depth_++] = byte;
      mode_ = byte == '{' ? Mode::kKeyOrEnd : Mode::kValueOrEnd;
      return true;
    case '"':
      mode_ = Mode::kString;
      in_key_ = false;
      return true;
    case '-':
      mode_ = Mode::kNumber;
      number_ = Num::kMinus;
      return true;
    case 't':
    case 'f':
    case 'n':
      mode_ = Mode::kLiteral;
      literal_ = byte == 't' ? 0 : byte == 'f' ? 1 : 2;
      literal_pos_ = 1;
      return true;
    default:
      if (!IsDigit(byte)) return false;
      mode_ = Mode::kNumber;
      number_ = byte == '0' ? Num::kZero : Num::kInt;
      return true;
  }
}

bool JsonState::Close(uint8_t byte) {
  if (depth_ == 0 || (byte == '}' ? '{' : '[') != stack_[depth_ - 1]) return false;
  --depth_;
  ValueDone();
  return true;
}

bool JsonState::StringByte(uint8_t byte) {
  if (utf8_left_ > 0) {
    if ((byte & 0xC0) != 0x80) return false;
    --utf8_left_;
    return true;
  }
  if (byte == '"') {
    if (in_key_) {
      mode_ = Mode::kColon;
    } else {
      ValueDone();
    }
    return true;
  }
  if (byte == '\\') {
    mode_ = Mode::kEscape;
    return true;
  }
  if (byte < 0x20) return false;
  if (byte < 0x80) return true;
  // A UTF-8 leading byte and how many continuation bytes it announces.
  if ((byte & 0xE0) == 0xC0 && byte >= 0xC2) {
    utf8_left_ = 1;
  } else if ((byte & 0xF0) == 0xE0) {
    utf8_left_ = 2;
  } else if ((byte & 0xF8) == 0xF0 && byte <= 0xF4) {
    utf8_left_ = 3;
  } else {
    return false;
  }
  return true;
}

bool JsonState::NumberByte(uint8_t byte) {
  const bool digit = IsDigit(byte);
  switch (number_) {
    case Num::kMinus:
      if (!digit) return false;
      number_ = byte == '0' ? Num::kZero : Num::kInt;
      return true;
    case Num::kDot:
    case Num::kExp:
    case Num::kExpSign:
      // A digit is required here.
      if (number_ == Num::kExp && (byte == '+' || byte == '-')) {
        number_ = Num::kExpSign;
        return true;
      }
      if (!digit) return false;
      number_ = number_ == Num::kDot ? Num::kFrac : Num::kExpInt;
      return true;
    case Num::kZero:
    case Num::kInt:
    case Num::kFrac:
    case Num::kExpInt:
      if (digit) {
        if (number_ == Num::kZero) return false;  // no leading zeros
        return true;
      }
      if (byte == '.' && (number_ == Num::kZero || number_ == Num::kInt)) {
        number_ = Num::kDot;
        return true;
      }
      if ((byte == 'e' || byte == 'E') && number_ != Num::kExpInt) {
        number_ = Num::kExp;
        return true;
      }
      // The number ends here; the byte belongs to what follows it.
      ValueDone();
      whitespace_run_ = 0;
      return Advance(byte);
  }
  return false;
}

bool JsonState::Advance(uint8_t byte) {
  const JsonState before = *this;
  bool ok = false;
  const bool structural = mode_ != Mode::kString && mode_ != Mode::kEscape && mode_ != Mode::kUnicode &&
                          mode_ != Mode::kNumber && mode_ != Mode::kLiteral;
  if (structural && IsWhitespace(byte)) {
    ok = mode_ != Mode::kDone && Whitespace(byte);
    if (!ok) *this = before;
    return ok;
  }
  if (structural) whitespace_run_ = 0;
  switch (mode_) {
    case Mode::kStart:
      ok = byte == '{' && StartValue(byte);
      break;
    case Mode::kValue:
      ok = StartValue(byte);
      break;
    case Mode::kValueOrEnd:
      ok = byte == ']' ? Close(byte) : StartValue(byte);
      break;
    case Mode::kKeyOrEnd:
    case Mode::kKey:
      if (byte == '"') {
        mode_ = Mode::kString;
        in_key_ = true;
        ok = true;
      } else {
        ok = mode_ == Mode::kKeyOrEnd && byte == '}' && Close(byte);
      }
      break;
    case Mode::kColon:
      ok = byte == ':';
      if (ok) mode_ = Mode::kValue;
      break;
    case Mode::kCommaOrEnd:
      if (byte == ',') {
        mode_ = stack_[depth_ - 1] == '{' ? Mode::kKey : Mode::kValue;
        ok = true;
      } else {
        ok = (byte == '}' || byte == ']') && Close(byte);
      }
      break;
    case Mode::kString:
      ok = StringByte(byte);
      break;
    case Mode::kEscape:
      if (byte == 'u') {
        mode_ = Mode::kUnicode;
        hex_left_ = 4;
        ok = true;
      } else {
        ok = std::strchr("\"\\/bfnrt", byte) != nullptr && byte != 0;
        if (ok) mode_ = Mode::kString;
      }
      break;
    case Mode::kUnicode:
      ok = IsHex(byte);
      if (ok && --hex_left_ == 0) mode_ = Mode::kString;
      break;
    case Mode::kNumber:
      ok = NumberByte(byte);
      break;
    case Mode::kLiteral: {
      const std::string_view word = kLiterals[literal_];
      ok = byte == static_cast<uint8_t>(word[literal_pos_]);
      if (ok && ++literal_pos_ == word.size()) ValueDone();
      break;
    }
    case Mode::kDone:
      ok = false;
      break;
  }
  if (!ok) *this = before;
  return ok;
}

}  // namespace bitfleet::coordinator

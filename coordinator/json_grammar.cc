#include "coordinator/json_grammar.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace bitfleet::coordinator {
namespace {

using Kind = JsonSchema::Kind;

bool IsWhitespace(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool IsDigit(uint8_t b) { return b >= '0' && b <= '9'; }
bool IsHex(uint8_t b) { return IsDigit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }

// Whether `text` sorts before `prefix` followed by `byte` (the literals are sorted as strings,
// which compare bytes as unsigned).
bool SortsBefore(std::string_view text, std::string_view prefix, uint8_t byte) {
  const int c = text.substr(0, prefix.size()).compare(prefix);
  if (c != 0) return c < 0;
  if (text.size() <= prefix.size()) return true;
  return static_cast<uint8_t>(text[prefix.size()]) < byte;
}

}  // namespace

JsonPath::JsonPath(const JsonSchema* schema)
    : schema_(schema),
      mode_(Mode::kValue),
      number_(Num::kMinus),
      in_key_(false),
      hex_left_(0),
      surrogate_(0),
      utf8_left_(0),
      utf8_first_(0),
      whitespace_run_(0),
      depth_(0),
      value_node_(static_cast<uint16_t>(schema->root())),
      scalar_node_(0),
      chars_(0),
      pos_(0),
      lo_(0),
      candidates_(0),
      stack_() {}

uint64_t JsonPath::Hash() const {
  // FNV-1a over the fields (the stack only up to the depth: frames above it are zero).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) h = (h ^ ((v >> (8 * i)) & 0xFF)) * 1099511628211ull;
  };
  mix(static_cast<uint8_t>(mode_), 1);
  mix(static_cast<uint8_t>(number_), 1);
  mix(in_key_, 1);
  mix(hex_left_, 1);
  mix(surrogate_, 1);
  mix(utf8_left_, 1);
  mix(utf8_first_, 1);
  mix(whitespace_run_, 1);
  mix(depth_, 1);
  mix(value_node_, 2);
  mix(scalar_node_, 2);
  mix(chars_, 2);
  mix(pos_, 2);
  mix(lo_, 4);
  mix(candidates_, 8);
  for (int i = 0; i < depth_; ++i) {
    mix(stack_[i].node, 2);
    mix(static_cast<uint8_t>(stack_[i].phase), 1);
    mix(stack_[i].count, 2);
  }
  return h;
}

bool JsonPath::complete() const {
  if (mode_ == Mode::kDone) return true;
  if (depth_ != 0) return false;
  return (mode_ == Mode::kNumber && NumberCanEnd()) || (mode_ == Mode::kLiteral && LiteralCanEnd());
}

bool JsonPath::Step(uint8_t byte, Choice& choice) {
  switch (mode_) {
    case Mode::kValue:
      if (IsWhitespace(byte)) return Whitespace(byte);
      whitespace_run_ = 0;
      return StartValue(value_node_, byte, choice);
    case Mode::kContainer:
      if (IsWhitespace(byte)) return Whitespace(byte);
      whitespace_run_ = 0;
      return ContainerByte(byte, choice);
    case Mode::kKey:
      return KeyByte(byte);
    case Mode::kString:
      return StringByte(byte);
    case Mode::kEscape:
      return EscapeByte(byte);
    case Mode::kUnicode:
      return UnicodeByte(byte);
    case Mode::kNumber:
      return NumberByte(byte, choice);
    case Mode::kLiteral:
      return LiteralByte(byte, choice);
    case Mode::kDone:
      return false;
  }
  return false;
}

bool JsonPath::Whitespace(uint8_t) {
  if (whitespace_run_ >= kMaxWhitespaceRun) return false;
  ++whitespace_run_;
  return true;
}

void JsonPath::ValueDone() {
  if (depth_ == 0) {
    mode_ = Mode::kDone;
  } else {
    mode_ = Mode::kContainer;
    Frame& f = Top();
    f.phase = Phase::kAfter;
    const JsonSchema::Node& n = Node(f.node);
    if (n.kind == Kind::kTagged) {
      // Its only property's value, a constant (literals_[lo_]), names the object that goes on,
      // past that object's first property.
      f.node = static_cast<uint16_t>(n.tagged[lo_]);
      f.count = 1;
    }
  }
  number_ = Num::kMinus;
  in_key_ = false;
  hex_left_ = surrogate_ = utf8_left_ = utf8_first_ = 0;
  value_node_ = scalar_node_ = chars_ = pos_ = 0;
  lo_ = 0;
  candidates_ = 0;
}

bool JsonPath::StartValue(int32_t node, uint8_t byte, Choice& choice) {
  const std::span<const int32_t> alternatives = schema_->Resolve(node, byte);
  if (alternatives.empty()) return false;
  choice.alternatives = static_cast<uint8_t>(alternatives.size());
  const int32_t id = alternatives[std::min<size_t>(choice.take, alternatives.size() - 1)];
  if (!Fits(id)) return false;
  const JsonSchema::Node& n = Node(static_cast<uint16_t>(id));
  value_node_ = 0;
  switch (n.kind) {
    case Kind::kObject:
    case Kind::kMap:
    case Kind::kArray:
    case Kind::kTagged:
      if (byte != (n.kind == Kind::kArray ? '[' : '{')) return false;
      stack_[depth_++] = Frame{static_cast<uint16_t>(id), Phase::kFirst, 0, 0};
      mode_ = Mode::kContainer;
      return true;
    case Kind::kString:
      if (byte != '"') return false;
      mode_ = Mode::kString;
      scalar_node_ = static_cast<uint16_t>(id);
      return true;
    case Kind::kNumber:
    case Kind::kInteger:
      if (JsonSchema::ClassOf(byte) != JsonSchema::kNumeral) return false;
      mode_ = Mode::kNumber;
      scalar_node_ = static_cast<uint16_t>(id);
      number_ = byte == '-' ? Num::kMinus : byte == '0' ? Num::kZero : Num::kInt;
      chars_ = byte == '-' ? 0 : 1;
      return true;
    case Kind::kLiterals:
      mode_ = Mode::kLiteral;
      scalar_node_ = static_cast<uint16_t>(id);
      lo_ = 0;
      pos_ = 0;
      return LiteralByte(byte, choice);
    case Kind::kUnion:
      break;  // Resolve returns no union
  }
  return false;
}

bool JsonPath::ContainerByte(uint8_t byte, Choice& choice) {
  switch (Node(Top().node).kind) {
    case Kind::kObject:
    case Kind::kTagged:  // until its first property's value names the object
      return ObjectByte(byte);
    case Kind::kMap:
      return MapByte(byte);
    case Kind::kArray:
      return ArrayByte(byte, choice);
    default:
      return false;
  }
}

uint64_t JsonPath::KeyCandidates() const {
  const Frame& f = stack_[depth_ - 1];
  const std::vector<JsonSchema::Property>& properties = Node(f.node).properties;
  uint64_t bits = 0;
  for (size_t p = f.count; p < properties.size(); ++p) {
    if (Fits(properties[p].value)) bits |= uint64_t{1} << p;
    if (properties[p].required) break;  // it cannot be skipped
  }
  return bits;
}

bool JsonPath::ObjectByte(uint8_t byte) {
  Frame& f = Top();
  const std::vector<JsonSchema::Property>& properties = Node(f.node).properties;
  const auto required_left = [&] {
    for (size_t p = f.count; p < properties.size(); ++p) {
      if (properties[p].required) return true;
    }
    return false;
  };
  switch (f.phase) {
    case Phase::kFirst:
    case Phase::kNext:
      if (byte == '"') {
        candidates_ = KeyCandidates();
        pos_ = 1;
        mode_ = Mode::kKey;
        return candidates_ != 0;
      }
      return f.phase == Phase::kFirst && byte == '}' && !required_left() && Close();
    case Phase::kColon:
      if (byte != ':') return false;
      mode_ = Mode::kValue;
      value_node_ = static_cast<uint16_t>(properties[f.count - 1].value);
      f.phase = Phase::kAfter;
      return true;
    case Phase::kAfter:
      if (byte == ',') {
        f.phase = Phase::kNext;
        return KeyCandidates() != 0;
      }
      return byte == '}' && !required_left() && Close();
  }
  return false;
}

bool JsonPath::KeyByte(uint8_t byte) {
  Frame& f = Top();
  const std::vector<JsonSchema::Property>& properties = Node(f.node).properties;
  uint64_t next = 0;
  for (uint64_t bits = candidates_; bits != 0; bits &= bits - 1) {
    const int p = std::countr_zero(bits);
    const std::string& key = properties[static_cast<size_t>(p)].key;
    if (pos_ < key.size() && static_cast<uint8_t>(key[pos_]) == byte) next |= uint64_t{1} << p;
  }
  if (next == 0) return false;
  candidates_ = next;
  ++pos_;
  // A key's text ends at its only unescaped quote, so a key matched in full is the only candidate.
  const int p = std::countr_zero(next);
  if (properties[static_cast<size_t>(p)].key.size() == pos_) {
    f.count = static_cast<uint16_t>(p + 1);
    f.phase = Phase::kColon;
    mode_ = Mode::kContainer;
    candidates_ = 0;
    pos_ = 0;
  }
  return true;
}

bool JsonPath::MapByte(uint8_t byte) {
  Frame& f = Top();
  const int32_t child = Node(f.node).child;
  switch (f.phase) {
    case Phase::kFirst:
    case Phase::kNext:
      if (byte == '"') {
        mode_ = Mode::kString;
        in_key_ = true;
        return Fits(child);
      }
      return f.phase == Phase::kFirst && byte == '}' && Close();
    case Phase::kColon:
      if (byte != ':') return false;
      mode_ = Mode::kValue;
      value_node_ = static_cast<uint16_t>(child);
      f.phase = Phase::kAfter;
      return true;
    case Phase::kAfter:
      if (byte == ',') {
        f.phase = Phase::kNext;
        return Fits(child);
      }
      return byte == '}' && Close();
  }
  return false;
}

bool JsonPath::ArrayByte(uint8_t byte, Choice& choice) {
  Frame& f = Top();
  const JsonSchema::Node& n = Node(f.node);
  const bool bounded = n.min > 0 || n.max != JsonSchema::kUnbounded;
  if (byte == ']') return (f.phase == Phase::kFirst || f.phase == Phase::kAfter) && f.count >= n.min && Close();
  switch (f.phase) {
    case Phase::kFirst:
    case Phase::kNext:
      // An item begins.
      if (f.count >= n.max) return false;
      if (bounded) ++f.count;
      f.phase = Phase::kAfter;
      return StartValue(n.child, byte, choice);
    case Phase::kAfter:
      if (byte != ',' || f.count >= n.max || !Fits(n.child)) return false;
      f.phase = Phase::kNext;
      return true;
    case Phase::kColon:
      break;
  }
  return false;
}

bool JsonPath::Close() {
  stack_[--depth_] = Frame{};
  ValueDone();
  return true;
}

bool JsonPath::StringLimited() const {
  if (in_key_) return false;
  const JsonSchema::Node& n = Node(scalar_node_);
  return n.min > 0 || n.max != JsonSchema::kUnbounded;
}

bool JsonPath::StringByte(uint8_t byte) {
  if (utf8_left_ > 0) {
    // RFC 3629: no overlong forms, no encoded surrogates, nothing past U+10FFFF.
    uint8_t lo = 0x80, hi = 0xBF;
    switch (utf8_first_) {
      case 0xE0: lo = 0xA0; break;
      case 0xED: hi = 0x9F; break;
      case 0xF0: lo = 0x90; break;
      case 0xF4: hi = 0x8F; break;
      default: break;
    }
    if (byte < lo || byte > hi) return false;
    utf8_first_ = 0;
    --utf8_left_;
    return true;
  }
  if ((surrogate_ & kLowNext) != 0) {
    // The second half of a surrogate pair must follow.
    if (byte != '\\') return false;
    mode_ = Mode::kEscape;
    return true;
  }
  const bool limited = StringLimited();
  if (byte == '"') {
    if (in_key_) {
      in_key_ = false;
      mode_ = Mode::kContainer;
      Top().phase = Phase::kColon;
      return true;
    }
    if (limited && chars_ < Node(scalar_node_).min) return false;
    ValueDone();
    return true;
  }
  // A character begins.
  if (byte < 0x20) return false;
  if (byte >= 0x80) {
    // A UTF-8 leading byte and how many continuation bytes it announces.
    if (byte >= 0xC2 && byte <= 0xDF) {
      utf8_left_ = 1;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      utf8_left_ = 2;
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      utf8_left_ = 3;
    } else {
      return false;
    }
    utf8_first_ = byte == 0xE0 || byte == 0xED || byte == 0xF0 || byte == 0xF4 ? byte : 0;
  }
  if (byte == '\\') mode_ = Mode::kEscape;
  if (limited) {
    // Count up to the maximum (refusing past it), or to the minimum when there is none.
    const JsonSchema::Node& n = Node(scalar_node_);
    if (chars_ >= n.max) return false;
    if (n.max != JsonSchema::kUnbounded || chars_ < n.min) ++chars_;
  }
  return true;
}

bool JsonPath::EscapeByte(uint8_t byte) {
  if ((surrogate_ & kLowNext) != 0 && byte != 'u') return false;
  if (byte == 'u') {
    mode_ = Mode::kUnicode;
    hex_left_ = 4;
    return true;
  }
  if (byte == 0 || std::strchr("\"\\/bfnrt", byte) == nullptr) return false;
  mode_ = Mode::kString;
  return true;
}

bool JsonPath::UnicodeByte(uint8_t byte) {
  if (!IsHex(byte)) return false;
  // Surrogate escapes come in pairs: \uD800-\uDBFF, then at once \uDC00-\uDFFF.
  const bool low_expected = (surrogate_ & kLowNext) != 0;
  if (hex_left_ == 4) {
    const bool d = byte == 'd' || byte == 'D';
    if (low_expected && !d) return false;
    if (d) surrogate_ |= kFirstD;
  } else if (hex_left_ == 3 && (surrogate_ & kFirstD) != 0) {
    const bool digit = IsDigit(byte);
    const bool high = digit ? byte >= '8' : (byte | 0x20) <= 'b';  // d8..db
    const bool low = !digit && (byte | 0x20) >= 'c';               // dc..df
    if (low_expected ? !low : low) return false;  // a low half right after a high one, never alone
    if (high) surrogate_ |= kHigh;
  }
  if (--hex_left_ == 0) {
    mode_ = Mode::kString;
    surrogate_ = (surrogate_ & kHigh) != 0 ? kLowNext : 0;
  }
  return true;
}

bool JsonPath::NumberCanEnd() const {
  return number_ == Num::kZero || number_ == Num::kInt || number_ == Num::kFrac || number_ == Num::kExpInt;
}

bool JsonPath::NumberByte(uint8_t byte, Choice& choice) {
  const bool digit = IsDigit(byte);
  const bool integer = Node(scalar_node_).kind == Kind::kInteger;
  // chars_ counts the digits of the integer part, then of the exponent (kept within bounds).
  switch (number_) {
    case Num::kMinus:
      if (!digit) return false;
      number_ = byte == '0' ? Num::kZero : Num::kInt;
      chars_ = 1;
      return true;
    case Num::kDot:
      if (!digit) return false;
      number_ = Num::kFrac;
      return true;
    case Num::kExp:
      if (byte == '+' || byte == '-') {
        number_ = Num::kExpSign;
        return true;
      }
      [[fallthrough]];
    case Num::kExpSign:
      if (!digit) return false;
      number_ = Num::kExpInt;
      chars_ = 1;
      return true;
    case Num::kZero:
    case Num::kInt:
    case Num::kFrac:
    case Num::kExpInt:
      if (digit) {
        if (number_ == Num::kZero) return false;  // no leading zeros
        if (number_ == Num::kInt && chars_ >= kMaxIntegerDigits) return false;
        if (number_ == Num::kExpInt && chars_ >= kMaxExponentDigits) return false;
        if (number_ != Num::kFrac) ++chars_;
        return true;
      }
      if (!integer && byte == '.' && (number_ == Num::kZero || number_ == Num::kInt)) {
        number_ = Num::kDot;
        chars_ = 0;
        return true;
      }
      if (!integer && (byte == 'e' || byte == 'E') && number_ != Num::kExpInt) {
        number_ = Num::kExp;
        chars_ = 0;
        return true;
      }
      // The number ends here; the byte belongs to what follows it.
      ValueDone();
      return Step(byte, choice);
  }
  return false;
}

bool JsonPath::LiteralCanEnd() const {
  return pos_ == Node(scalar_node_).literals[lo_].size();
}

bool JsonPath::LiteralByte(uint8_t byte, Choice& choice) {
  const std::vector<std::string>& literals = Node(scalar_node_).literals;
  const std::string_view prefix = std::string_view(literals[lo_]).substr(0, pos_);
  // The literals that begin with the bytes so far are adjacent from lo_; the first of them that
  // goes on with `byte` is where the sorted order reaches prefix + byte.
  size_t lo = lo_, hi = literals.size();
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (SortsBefore(literals[mid], prefix, byte)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  const size_t i = lo;
  const bool goes_on = i < literals.size() && literals[i].size() > pos_ &&
                       std::string_view(literals[i]).substr(0, pos_) == prefix &&
                       static_cast<uint8_t>(literals[i][pos_]) == byte;
  if (!goes_on) {
    // A literal matched in full (a number, as 1 against 10) ends here: the byte follows it.
    if (pos_ == 0 || !LiteralCanEnd()) return false;
    ValueDone();
    return Step(byte, choice);
  }
  lo_ = static_cast<uint32_t>(i);
  ++pos_;
  if (LiteralCanEnd()) {
    const bool longer_follows = lo_ + 1 < literals.size() && literals[lo_ + 1].starts_with(literals[lo_]);
    if (!longer_follows) ValueDone();
  }
  return true;
}

JsonState::JsonState() : JsonState(JsonSchema::AnyObject().get()) {}

JsonState::JsonState(const JsonSchema* schema) : size_(1) {
  paths_[0] = JsonPath(schema);
  hashes_[0] = paths_[0].Hash();
}

JsonState& JsonState::operator=(const JsonState& other) {
  size_ = other.size_;
  std::copy(other.paths_.begin(), other.paths_.begin() + size_, paths_.begin());
  std::copy(other.hashes_.begin(), other.hashes_.begin() + size_, hashes_.begin());
  return *this;
}

bool JsonState::operator==(const JsonState& other) const {
  if (size_ == 1 && other.size_ == 1) return paths_[0] == other.paths_[0];  // hashes_ may be stale (below)
  return size_ == other.size_ && std::equal(hashes_.begin(), hashes_.begin() + size_, other.hashes_.begin()) &&
         std::equal(paths_.begin(), paths_.begin() + size_, other.paths_.begin());
}

uint64_t JsonState::Hash() const {
  if (size_ == 1) return paths_[0].Hash();
  uint64_t h = 1469598103934665603ull;
  for (uint8_t i = 0; i < size_; ++i) h = (h ^ hashes_[i]) * 1099511628211ull;
  return h;
}

bool JsonState::complete() const {
  for (uint8_t i = 0; i < size_; ++i) {
    if (paths_[i].complete()) return true;
  }
  return false;
}

void JsonState::Add(const JsonPath& path) {
  if (size_ == kMaxPaths) return;
  const uint64_t hash = path.Hash();
  for (uint8_t i = 0; i < size_; ++i) {
    if (hashes_[i] == hash && paths_[i] == path) return;
  }
  // Kept in the order of their hashes, so that equal sets compare equal.
  uint8_t at = size_;
  while (at > 0 && hashes_[at - 1] > hash) {
    paths_[at] = paths_[at - 1];
    hashes_[at] = hashes_[at - 1];
    --at;
  }
  paths_[at] = path;
  hashes_[at] = hash;
  ++size_;
}

bool JsonState::AdvanceOrSpoil(uint8_t byte) {
  if (size_ == 1) {
    // The common case: one path, stepped in place (a single path's hash is computed when asked).
    JsonPath::Choice choice;
    if (!paths_[0].schema()->ambiguous()) return paths_[0].Step(byte, choice);
    const JsonPath before = paths_[0];
    const bool ok = paths_[0].Step(byte, choice);
    if (choice.alternatives <= 1) return ok;
    paths_[0] = before;  // the byte begins a value like several alternatives: follow each
  }
  // Scratch for the next paths (per thread: masks may be computed on several).
  thread_local JsonState next{Empty{}};
  next.size_ = 0;
  for (uint8_t i = 0; i < size_; ++i) {
    for (uint8_t take = 0;; ++take) {
      JsonPath path = paths_[i];
      JsonPath::Choice choice{take, 0};
      if (path.Step(byte, choice)) next.Add(path);
      if (take + 1 >= choice.alternatives) break;
    }
  }
  if (next.size_ == 0) return false;
  *this = next;
  return true;
}

bool JsonState::Advance(uint8_t byte) {
  const JsonState before = *this;
  if (AdvanceOrSpoil(byte)) return true;
  *this = before;
  return false;
}

}  // namespace bitfleet::coordinator

// A byte-at-a-time JSON recognizer (RFC 8259) for constrained decoding, driven by a compiled
// JSON Schema (json_schema.h): JsonState::Advance accepts a byte only if the bytes so far stay a
// prefix of some JSON text the schema's generated subset holds, and from every state it leaves
// some way to finish (a sampler masked by it can always end with a valid document). The default
// schema is any JSON object (OpenAI's response_format json_object). A JsonState is a small set
// of JsonPaths: one per way the text may still go through a union's alternatives that begin
// alike.
//
// Beyond the RFC, to keep a masked model from running away: containers nest at most kMaxDepth
// deep (a schema's required nesting is checked to fit at compile time, optional nesting at
// run time), at most kMaxWhitespaceRun whitespace bytes may follow one another outside
// strings, and numbers have at most kMaxIntegerDigits / kMaxExponentDigits digits. Strings hold
// well-formed UTF-8 (RFC 3629), no raw control characters, and \u surrogate escapes only in
// pairs (parsers such as nlohmann's refuse a lone one).
//
// A path is small and trivially copyable (the mask search copies the state per trie node) and
// comparable (masks are cached per state; states of one schema compare, fields that no longer
// matter are reset so that equal futures compare equal).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "coordinator/json_schema.h"

namespace bitfleet::coordinator {

// One way through the schema: deterministic, except that a value beginning like several of a
// union's alternatives is begun as the one `Choice::take` names (JsonState follows each).
class JsonPath {
 public:
  static constexpr int kMaxDepth = JsonSchema::kMaxDepth;
  // 64: room for a newline and 4-space indentation 15 levels deep.
  static constexpr int kMaxWhitespaceRun = 64;
  // Numbers stay within a double's range (parsers such as nlohmann's refuse 1e400): at most 20
  // digits before the point (2^64 has 20) and 2 in the exponent.
  static constexpr int kMaxIntegerDigits = 20;
  static constexpr int kMaxExponentDigits = 2;

  // Which alternative a value that begins like several is begun as (in), and how many there
  // were (out; 0 when the byte began no value).
  struct Choice {
    uint8_t take = 0;
    uint8_t alternatives = 0;
  };

  // Uninitialized (trivial, so that a JsonState's unused slots cost nothing); assign before use.
  JsonPath() = default;
  // At the start of a value of `schema`, which must outlive the path.
  explicit JsonPath(const JsonSchema* schema);

  // Takes one more byte; false if no text of the schema continues so this way (the path is then
  // unspecified: callers keep a copy).
  bool Step(uint8_t byte, Choice& choice);
  // The text so far is a whole document (more bytes may still be taken: a number at the top
  // level may go on).
  bool complete() const;

  bool operator==(const JsonPath&) const = default;
  uint64_t Hash() const;
  const JsonSchema* schema() const { return schema_; }

 private:
  enum class Mode : uint8_t {
    kValue,      // a value of value_node_ is expected (after ':', or at the start)
    kContainer,  // between the tokens of the innermost open container: its frame's phase says what
    kKey,        // inside a declared property's key (candidates_, pos_)
    kString,     // inside a string (a value of scalar_node_, or a free key: in_key_)
    kEscape,     // after '\' in a string
    kUnicode,    // inside \uXXXX (hex_left_ digits to go)
    kNumber,     // inside a number (number_)
    kLiteral,    // inside one of scalar_node_'s literals (literals_[lo_] matched to pos_)
    kDone,       // the top-level value is finished
  };
  // Where a container is: after its open bracket, after a ',', after a key, after a value.
  enum class Phase : uint8_t { kFirst, kNext, kColon, kAfter };
  // Number sub-states, by what was read last.
  enum class Num : uint8_t { kMinus, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpInt };

  // Zero when not open (paths compare whole).
  struct Frame {
    uint16_t node;
    Phase phase;
    uint8_t unused;
    // kObject: properties [0, count) are behind; kArray: items started (kept only when the
    // array has bounds, saturating).
    uint16_t count;
    bool operator==(const Frame&) const = default;
  };

  const JsonSchema::Node& Node(uint16_t id) const { return schema_->node(id); }
  bool Fits(int32_t node) const { return depth_ + Node(static_cast<uint16_t>(node)).min_depth <= kMaxDepth; }
  Frame& Top() { return stack_[depth_ - 1]; }

  bool Whitespace(uint8_t byte);
  // A value of `node` (through its union: the alternative choice.take) beginning with `byte`.
  bool StartValue(int32_t node, uint8_t byte, Choice& choice);
  bool ContainerByte(uint8_t byte, Choice& choice);
  bool ObjectByte(uint8_t byte);
  bool MapByte(uint8_t byte);
  bool ArrayByte(uint8_t byte, Choice& choice);
  bool Close();
  // The declared properties a key may name next: bits over the top object's properties.
  uint64_t KeyCandidates() const;
  bool KeyByte(uint8_t byte);
  bool StringByte(uint8_t byte);
  bool EscapeByte(uint8_t byte);
  bool UnicodeByte(uint8_t byte);
  bool NumberByte(uint8_t byte, Choice& choice);
  bool LiteralByte(uint8_t byte, Choice& choice);
  // A literal's text is matched in full: finish the value unless a longer literal goes on.
  bool LiteralCanEnd() const;
  bool NumberCanEnd() const;
  // What a finished value leaves: its container's next phase, or done at the top.
  void ValueDone();
  bool StringLimited() const;

  const JsonSchema* schema_;
  Mode mode_;
  Num number_;
  bool in_key_;
  uint8_t hex_left_;
  // Surrogate escapes: kFirstD (this \u escape began with d), kHigh (it is d800..dbff),
  // kLowNext (one was: the next character must be a \u escape of dc00..dfff).
  static constexpr uint8_t kFirstD = 1, kHigh = 2, kLowNext = 4;
  uint8_t surrogate_;
  uint8_t utf8_left_;     // continuation bytes the current character still needs
  uint8_t utf8_first_;    // a leading byte whose next byte has a narrower range (E0 ED F0 F4)
  uint8_t whitespace_run_;
  uint8_t depth_;
  uint16_t value_node_;   // kValue: the schema node expected
  uint16_t scalar_node_;  // kString / kNumber / kLiteral: the node being written
  uint16_t chars_;        // characters of a bounded string so far; digits of a number's part
  uint16_t pos_;          // kKey / kLiteral: bytes matched
  uint32_t lo_;           // kLiteral: the first literal the bytes so far begin
  uint64_t candidates_;   // kKey: the properties whose key the bytes so far begin
  std::array<Frame, kMaxDepth> stack_;
};

static_assert(std::is_trivially_default_constructible_v<JsonPath> && std::is_trivially_copyable_v<JsonPath>,
              "JsonState's copies and unused slots rely on it");

// Where a text stands in a schema's grammar: the paths still possible (one, unless alternatives
// that begin alike are being followed side by side), deduplicated, at most kMaxPaths (further
// ones are dropped: every path kept is a valid way on, so what is generated still validates;
// only the choice narrows). Copies cost the live paths only.
class JsonState {
 public:
  static constexpr int kMaxDepth = JsonPath::kMaxDepth;
  static constexpr int kMaxWhitespaceRun = JsonPath::kMaxWhitespaceRun;
  static constexpr int kMaxPaths = 8;

  // Any JSON object.
  JsonState();
  // Values of `schema`, which must outlive the state.
  explicit JsonState(const JsonSchema* schema);
  JsonState(const JsonState& other) { *this = other; }
  JsonState& operator=(const JsonState& other);

  // Takes one more byte; false (and the state unchanged) if no text of the schema continues so.
  bool Advance(uint8_t byte);
  // Advance without keeping the state on a refusal: it is then unusable until assigned again
  // (the trie walk, which overwrites it anyway, saves a copy per node).
  bool AdvanceOrSpoil(uint8_t byte);
  // Some path has a whole document (more bytes may still be taken).
  bool complete() const;
  int paths() const { return size_; }
  // The only path, when it is one that no byte can split (its schema has no alternatives that
  // begin alike); else null.
  const JsonPath* single() const {
    return size_ == 1 && !paths_[0].schema()->ambiguous() ? &paths_[0] : nullptr;
  }

  bool operator==(const JsonState& other) const;
  // A hash of the whole state (mask cache key).
  uint64_t Hash() const;

 private:
  struct Empty {};
  explicit JsonState(Empty) {}
  // Adds a path unless it is there already or the state is full.
  void Add(const JsonPath& path);

  std::array<JsonPath, kMaxPaths> paths_;  // [0, size_) in the order of their hashes
  std::array<uint64_t, kMaxPaths> hashes_{};
  uint8_t size_ = 0;
};

}  // namespace bitfleet::coordinator

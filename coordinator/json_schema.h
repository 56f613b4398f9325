// A JSON Schema compiled for constrained decoding (response_format json_schema): a graph of
// nodes that JsonState (json_grammar.h) walks byte by byte, so that every output the mask lets
// through validates against the schema. docs/protocol.md lists the subset; in short:
//
//   type (one or a list), properties / required / additionalProperties, items / minItems /
//   maxItems, minLength / maxLength, enum, const, anyOf / oneOf, allOf with one member, $ref to
//   "#" or a JSON pointer in the document ($defs, definitions; recursion allowed), and the
//   annotations (title, description, default, examples, format, ...), which do not constrain.
//
// What the decoder generates is a subset of what the schema accepts, chosen to keep the state
// small and the choice deterministic:
//   - declared properties appear in the schema's order; optional ones may be left out; no other
//     property is generated (additionalProperties is honoured only for objects that declare no
//     properties);
//   - values are written as the text the schema's constants dump to (enum / const, compactly);
//   - "integer" has no fraction or exponent;
//   - anyOf / oneOf alternatives that begin alike (two objects) are followed side by side
//     (JsonState keeps one path per alternative still possible, at most 8); oneOf needs them to be
//     exclusive: alternatives that begin differently are, objects that begin alike must differ
//     in the constants of a property they all require (a discriminator such as "type");
//   - objects whose first declared property is the same required key with a different string
//     constant in each (a tool call's "name") are followed as one object until that constant
//     names the alternative (kTagged), however many there are;
//   - strings with a length bound count characters as code points (a \u surrogate pair is one),
//     as validators count them.
// Assertions outside the subset (pattern, minimum, multipleOf, uniqueItems: true, ...) are
// refused by name rather than ignored: a schema is either enforced or refused. Best effort
// (OpenAI's "strict": false) ignores them instead, and takes oneOf as anyOf: what is generated
// then holds the subset's constraints only.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bitfleet::coordinator {

class JsonSchema {
 public:
  // JsonState's nesting bound (containers open at once); a schema that cannot be satisfied
  // within it is refused.
  static constexpr int kMaxDepth = 32;
  static constexpr uint32_t kUnbounded = 0xFFFF;  // counts saturate here (uint16 in the state)
  static constexpr size_t kMaxSchemaBytes = 256 * 1024;
  static constexpr size_t kMaxNodes = 8192;
  static constexpr size_t kMaxProperties = 64;  // per object: the state keeps a candidate bit each
  static constexpr size_t kMaxAlternatives = 8;  // of a union that begin with one kind of byte

  enum class Kind : uint8_t {
    kObject,    // declared properties, in order
    kMap,       // any keys; values of `child`
    kArray,     // items of `child`, `min`..`max` of them
    kString,    // `min`..`max` characters
    kNumber,
    kInteger,
    kLiterals,  // one of `literals`
    kUnion,     // by first byte: `by_first`
    kTagged,    // objects told apart by their first property: `properties` holds it alone (its
                // value: the string constants, sorted), `tagged` the object each one names
  };
  // What a value's first byte says it is (the union dispatch).
  enum FirstByte : uint8_t { kOpenObject, kOpenArray, kQuote, kNumeral, kTrue, kFalse, kNull, kFirstBytes };

  struct Property {
    std::string key;  // the key as JSON text, quotes included
    int32_t value = -1;
    bool required = false;
  };
  // The nodes a value may be that begin with one kind of byte.
  struct Alternatives {
    std::array<int32_t, kMaxAlternatives> ids{};
    uint8_t size = 0;
  };
  struct Node {
    int32_t id = 0;
    Kind kind = Kind::kUnion;
    std::vector<Property> properties;  // kObject
    int32_t child = -1;                // kMap: value schema; kArray: item schema
    uint32_t min = 0;                  // kArray: items; kString: characters
    uint32_t max = kUnbounded;
    std::vector<std::string> literals;  // kLiterals: compact JSON texts, sorted, distinct
    std::array<Alternatives, kFirstBytes> by_first{};  // kUnion: the leaves a first byte selects
    std::vector<int32_t> tagged;  // kTagged: per constant of properties[0].value, its object
    // Containers a value of this node needs open at once to be finished (the object or array
    // itself included; 0 for scalars). kMaxDepth + 1: it cannot be finished within the bound.
    int32_t min_depth = 0;
  };

  // Compiles a schema given as JSON text. INVALID_ARGUMENT naming the place (a JSON pointer into
  // the schema) and the reason for text that is not JSON, assertion keywords outside the subset
  // (unless `best_effort`), structures outside it (tuples, allOf of several, keywords beside
  // $ref), a $ref that does not resolve, a oneOf that is not exclusive (unless `best_effort`),
  // or a schema no value satisfies within kMaxDepth levels.
  static StatusOr<std::shared_ptr<const JsonSchema>> Compile(std::string_view text, bool best_effort = false);
  // Any JSON object (response_format json_object).
  static std::shared_ptr<const JsonSchema> AnyObject();

  int32_t root() const { return root_; }
  // Whether some union has alternatives that begin alike (a state may then hold several paths).
  bool ambiguous() const { return ambiguous_; }
  const Node& node(int32_t id) const { return nodes_[static_cast<size_t>(id)]; }
  size_t size() const { return nodes_.size(); }
  static FirstByte ClassOf(uint8_t byte);
  // The nodes (none a union) a value of node `id` starting with `byte` may be: the node itself
  // unless it is a union; empty if none.
  std::span<const int32_t> Resolve(int32_t id, uint8_t byte) const;

 private:
  friend class JsonSchemaCompiler;
  std::vector<Node> nodes_;
  int32_t root_ = 0;
  bool ambiguous_ = false;
};

}  // namespace bitfleet::coordinator

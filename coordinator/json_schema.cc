#include "coordinator/json_schema.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "nlohmann/json.hpp"

namespace bitfleet::coordinator {
namespace {

// Ordered: properties are generated in the order the schema lists them.
using Json = nlohmann::ordered_json;
using Kind = JsonSchema::Kind;

constexpr int kMaxSchemaNesting = 64;
// min_depth past the bound: such a value cannot be finished within JsonSchema::kMaxDepth.
constexpr int32_t kTooDeep = JsonSchema::kMaxDepth + 1;

// Keywords that constrain values in ways the decoder does not enforce: refused, never ignored.
const std::set<std::string, std::less<>> kUnsupported = {
    "pattern", "patternProperties", "propertyNames", "minProperties", "maxProperties", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "prefixItems", "contains", "minContains", "maxContains",
    "additionalItems", "unevaluatedItems", "unevaluatedProperties", "dependentRequired", "dependentSchemas",
    "dependencies", "if", "then", "else", "not", "$dynamicRef", "$recursiveRef", "contentSchema"};
// Keywords that do not constrain: may stand beside $ref, anyOf and allOf.
const std::set<std::string, std::less<>> kAnnotations = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "format", "contentEncoding", "contentMediaType", "$defs", "definitions", "$anchor"};

const std::set<std::string, std::less<>> kTypes = {"object", "array", "string", "number", "integer", "boolean",
                                                   "null"};

std::string Where(const std::string& pointer) { return "#" + pointer; }

Status SchemaError(const std::string& pointer, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("json_schema at ", Where(pointer), ": ", what));
}

std::string EscapePointerToken(const std::string& token) {
  std::string out;
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// The deepest nesting of brackets outside strings (bounds the parser's and the compiler's
// recursion before either runs).
int Nesting(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

bool LiteralHasType(const Json& value, const std::string& type) {
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  if (type == "string") return value.is_string();
  if (type == "number") return value.is_number();
  if (type == "integer") return value.is_number_integer();
  if (type == "boolean") return value.is_boolean();
  if (type == "null") return value.is_null();
  return false;
}

}  // namespace

// Compiles one document. Every schema location (a JSON pointer) becomes one node, made before
// its children so that a $ref back to it (recursion) finds it; $ref, allOf of one and type
// lists become unions, which Finish flattens into first-byte tables (literal alternatives
// merged; others that begin alike listed side by side).
class JsonSchemaCompiler {
 public:
  JsonSchemaCompiler(const Json& document, bool best_effort) : document_(document), best_effort_(best_effort) {}

  StatusOr<std::shared_ptr<const JsonSchema>> Run() {
    BF_ASSIGN_OR_RETURN(int32_t root, CompileAt("", 0));
    BF_RETURN_IF_ERROR(Finish());
    if (nodes_[static_cast<size_t>(root)].min_depth > JsonSchema::kMaxDepth) {
      return SchemaError("", absl::StrCat("no value satisfies it within ", JsonSchema::kMaxDepth,
                                          " levels of nesting (does a required property or item refer back to "
                                          "its own schema?)"));
    }
    auto schema = std::make_shared<JsonSchema>();
    for (const JsonSchema::Node& node : nodes_) {
      for (const JsonSchema::Alternatives& alternatives : node.by_first) {
        schema->ambiguous_ = schema->ambiguous_ || alternatives.size > 1;
      }
    }
    schema->nodes_ = std::move(nodes_);
    schema->root_ = root;
    return std::shared_ptr<const JsonSchema>(std::move(schema));
  }

 private:
  int32_t NewNode(Kind kind) {
    JsonSchema::Node node;
    node.id = static_cast<int32_t>(nodes_.size());
    node.kind = kind;
    nodes_.push_back(std::move(node));
    return static_cast<int32_t>(nodes_.size()) - 1;
  }
  JsonSchema::Node& At(int32_t id) { return nodes_[static_cast<size_t>(id)]; }

  // The schema at a JSON pointer into the document (RFC 6901), or null.
  const Json* Locate(const std::string& pointer) const {
    const Json* at = &document_;
    size_t pos = 0;
    while (pos < pointer.size()) {
      if (pointer[pos] != '/') return nullptr;
      const size_t end = std::min(pointer.find('/', pos + 1), pointer.size());
      std::string token;
      for (size_t i = pos + 1; i < end; ++i) {
        if (pointer[i] == '~' && i + 1 < end && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
          token.push_back(pointer[++i] == '0' ? '~' : '/');
        } else {
          token.push_back(pointer[i]);
        }
      }
      if (at->is_object()) {
        auto it = at->find(token);
        if (it == at->end()) return nullptr;
        at = &*it;
      } else if (at->is_array()) {
        if (token.empty() || token.size() > 9 || token.find_first_not_of("0123456789") != std::string::npos) {
          return nullptr;
        }
        const size_t index = std::stoul(token);
        if (index >= at->size()) return nullptr;
        at = &(*at)[index];
      } else {
        return nullptr;
      }
      pos = end;
    }
    return at;
  }

  StatusOr<int32_t> CompileAt(const std::string& pointer, int nesting) {
    auto found = by_pointer_.find(pointer);
    if (found != by_pointer_.end()) return found->second;
    if (nesting > kMaxSchemaNesting) {
      return SchemaError(pointer, absl::StrCat("schemas nest (through properties, items and $ref) deeper than ",
                                               kMaxSchemaNesting));
    }
    if (nodes_.size() >= JsonSchema::kMaxNodes) {
      return SchemaError(pointer, absl::StrCat("the schema needs more than ", JsonSchema::kMaxNodes, " nodes"));
    }
    const Json* schema = Locate(pointer);
    if (schema == nullptr) return SchemaError(pointer, "does not exist");
    return CompileSchema(*schema, pointer, nesting);
  }

  StatusOr<int32_t> Any() {
    if (any_ >= 0) return any_;
    any_ = NewNode(Kind::kUnion);
    const int32_t object = NewNode(Kind::kMap);
    At(object).child = any_;
    const int32_t array = NewNode(Kind::kArray);
    At(array).child = any_;
    const int32_t literals = NewNode(Kind::kLiterals);
    At(literals).literals = {"false", "null", "true"};
    members_[any_] = {object, array, NewNode(Kind::kString), NewNode(Kind::kNumber), literals};
    return any_;
  }

  // Keywords that constrain nothing here: annotations, and under best effort the assertions
  // outside the subset.
  bool Ignored(const std::string& key) const {
    return kAnnotations.count(key) > 0 || (best_effort_ && (kUnsupported.count(key) > 0 || key == "uniqueItems"));
  }

  // Keywords beside $ref / anyOf / allOf must not constrain (their meaning would be an
  // intersection, outside the subset).
  Status OnlyAnnotationsBeside(const Json& schema, const std::string& pointer, std::string_view keyword) const {
    for (const auto& [key, value] : schema.items()) {
      if (key == keyword || Ignored(key)) continue;
      return SchemaError(pointer, absl::StrCat("'", key, "' beside '", std::string(keyword), "' is not supported"));
    }
    return absl::OkStatus();
  }

  StatusOr<int32_t> CompileSchema(const Json& schema, const std::string& pointer, int nesting) {
    if (schema.is_boolean()) {
      if (!schema.get<bool>()) return SchemaError(pointer, "the schema false admits no value");
      BF_ASSIGN_OR_RETURN(int32_t any, Any());
      by_pointer_[pointer] = any;
      return any;
    }
    if (!schema.is_object()) return SchemaError(pointer, "a schema must be an object or a boolean");
    for (const auto& [key, value] : schema.items()) {
      if (best_effort_) break;  // assertions outside the subset are not enforced
      if (kUnsupported.count(key) > 0) return SchemaError(pointer, absl::StrCat("'", key, "' is not supported"));
      if (key == "uniqueItems" && value != Json(false)) {
        return SchemaError(pointer, "'uniqueItems' is not supported");
      }
    }
    // A union node stands for this location first, so that references back to it resolve.
    const int32_t id = NewNode(Kind::kUnion);
    by_pointer_[pointer] = id;
    std::vector<int32_t> members;
    if (auto ref = schema.find("$ref"); ref != schema.end()) {
      BF_RETURN_IF_ERROR(OnlyAnnotationsBeside(schema, pointer, "$ref"));
      if (!ref->is_string() || ref->get<std::string>().empty() || ref->get<std::string>()[0] != '#') {
        return SchemaError(pointer, "'$ref' must be \"#\" or \"#/json/pointer\" into this schema");
      }
      const std::string target = ref->get<std::string>().substr(1);
      if (Locate(target) == nullptr) {
        return SchemaError(pointer, absl::StrCat("'$ref' ", ref->get<std::string>(), " does not resolve"));
      }
      BF_ASSIGN_OR_RETURN(int32_t member, CompileAt(target, nesting + 1));
      members.push_back(member);
    } else if (auto all = schema.find("allOf"); all != schema.end()) {
      BF_RETURN_IF_ERROR(OnlyAnnotationsBeside(schema, pointer, "allOf"));
      if (!all->is_array() || all->size() != 1) return SchemaError(pointer, "'allOf' is supported with one member");
      BF_ASSIGN_OR_RETURN(int32_t member, CompileAt(pointer + "/allOf/0", nesting + 1));
      members.push_back(member);
    } else if (schema.contains("anyOf") || schema.contains("oneOf")) {
      const char* keyword = schema.contains("anyOf") ? "anyOf" : "oneOf";
      if (std::string_view(keyword) == "oneOf") one_of_.push_back(id);
      if (schema.contains("anyOf") && schema.contains("oneOf")) {
        return SchemaError(pointer, "'anyOf' beside 'oneOf' is not supported");
      }
      BF_RETURN_IF_ERROR(OnlyAnnotationsBeside(schema, pointer, keyword));
      const Json& list = schema.at(keyword);
      if (!list.is_array() || list.empty()) {
        return SchemaError(pointer, absl::StrCat("'", keyword, "' must be a non-empty array"));
      }
      for (size_t i = 0; i < list.size(); ++i) {
        BF_ASSIGN_OR_RETURN(int32_t member, CompileAt(absl::StrCat(pointer, "/", keyword, "/", i), nesting + 1));
        members.push_back(member);
      }
    } else {
      BF_ASSIGN_OR_RETURN(members, CompileTypes(schema, pointer, nesting));
    }
    members_[id] = std::move(members);
    return id;
  }

  // The node per type the schema allows ("type": a name or a list; absent: what its keywords
  // describe, or any value), or one literals node for enum / const.
  StatusOr<std::vector<int32_t>> CompileTypes(const Json& schema, const std::string& pointer, int nesting) {
    std::vector<std::string> types;
    if (auto type = schema.find("type"); type != schema.end()) {
      if (type->is_string()) {
        types.push_back(type->get<std::string>());
      } else if (type->is_array() && !type->empty()) {
        for (const Json& t : *type) {
          if (!t.is_string()) return SchemaError(pointer, "'type' must be a name or a list of names");
          types.push_back(t.get<std::string>());
        }
      } else {
        return SchemaError(pointer, "'type' must be a name or a list of names");
      }
      for (const std::string& t : types) {
        if (kTypes.count(t) == 0) return SchemaError(pointer, absl::StrCat("unknown type '", t, "'"));
      }
    }
    if (schema.contains("enum") || schema.contains("const")) {
      BF_ASSIGN_OR_RETURN(int32_t literals, CompileLiterals(schema, pointer, types));
      return std::vector<int32_t>{literals};
    }
    if (types.empty()) {
      const bool object = schema.contains("properties") || schema.contains("required") ||
                          schema.contains("additionalProperties");
      const bool array = schema.contains("items") || schema.contains("minItems") || schema.contains("maxItems");
      const bool string = schema.contains("minLength") || schema.contains("maxLength");
      if (object) types.push_back("object");
      if (array) types.push_back("array");
      if (string) types.push_back("string");
      if (types.empty()) {
        BF_ASSIGN_OR_RETURN(int32_t any, Any());
        return std::vector<int32_t>{any};
      }
    }
    std::vector<int32_t> nodes;
    for (const std::string& type : types) {
      BF_ASSIGN_OR_RETURN(int32_t node, CompileTyped(schema, pointer, type, nesting));
      nodes.push_back(node);
    }
    return nodes;
  }

  StatusOr<int32_t> CompileLiterals(const Json& schema, const std::string& pointer,
                                    const std::vector<std::string>& types) {
    for (const auto& [key, value] : schema.items()) {
      if (key == "enum" || key == "const" || key == "type" || Ignored(key)) continue;
      return SchemaError(pointer, absl::StrCat("'", key, "' beside 'enum' or 'const' is not supported"));
    }
    auto e = schema.find("enum");
    if (e != schema.end() && !e->is_array()) return SchemaError(pointer, "'enum' must be an array");
    std::vector<const Json*> values;
    if (auto c = schema.find("const"); c != schema.end()) {
      // With an enum beside it: the const if the enum lists it.
      if (e == schema.end() || std::find(e->begin(), e->end(), *c) != e->end()) values.push_back(&*c);
    } else {
      for (const Json& v : *e) values.push_back(&v);
    }
    std::vector<std::string> texts;
    for (const Json* value : values) {
      bool typed = types.empty();
      for (const std::string& t : types) typed = typed || LiteralHasType(*value, t);
      if (typed) texts.push_back(value->dump());
    }
    std::sort(texts.begin(), texts.end());
    texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
    if (texts.empty()) return SchemaError(pointer, "'enum' / 'const' admit no value of the schema's type");
    const int32_t id = NewNode(Kind::kLiterals);
    At(id).literals = std::move(texts);
    return id;
  }

  // A non-negative integer keyword; absent: nullopt.
  static StatusOr<std::optional<uint64_t>> Count(const Json& schema, const std::string& pointer, const char* name) {
    auto it = schema.find(name);
    if (it == schema.end()) return std::optional<uint64_t>();
    if (it->is_number_unsigned()) return std::optional<uint64_t>(it->get<uint64_t>());
    if (it->is_number_float() && it->get<double>() >= 0 && it->get<double>() < 1e18 &&
        it->get<double>() == static_cast<double>(static_cast<uint64_t>(it->get<double>()))) {
      return std::optional<uint64_t>(static_cast<uint64_t>(it->get<double>()));
    }
    return SchemaError(pointer, absl::StrCat("'", name, "' must be a non-negative integer"));
  }

  // min / max bounds (minItems / maxItems, minLength / maxLength) into a node.
  static Status Bounds(const Json& schema, const std::string& pointer, const char* min_name, const char* max_name,
                       JsonSchema::Node& node) {
    BF_ASSIGN_OR_RETURN(std::optional<uint64_t> min, Count(schema, pointer, min_name));
    BF_ASSIGN_OR_RETURN(std::optional<uint64_t> max, Count(schema, pointer, max_name));
    if (min && *min >= JsonSchema::kUnbounded) {
      return SchemaError(pointer, absl::StrCat("'", min_name, "' over ", JsonSchema::kUnbounded - 1,
                                               " is not supported"));
    }
    if (min && max && *min > *max) {
      return SchemaError(pointer, absl::StrCat("no value has '", min_name, "' ", *min, " > '", max_name, "' ", *max));
    }
    node.min = min.value_or(0);
    // A bound the count cannot reach is no bound.
    node.max = max && *max < JsonSchema::kUnbounded ? static_cast<uint32_t>(*max) : JsonSchema::kUnbounded;
    return absl::OkStatus();
  }

  StatusOr<int32_t> CompileTyped(const Json& schema, const std::string& pointer, const std::string& type,
                                 int nesting) {
    if (type == "boolean" || type == "null") {
      const int32_t id = NewNode(Kind::kLiterals);
      At(id).literals = type == "null" ? std::vector<std::string>{"null"} : std::vector<std::string>{"false", "true"};
      return id;
    }
    if (type == "number" || type == "integer") return NewNode(type == "number" ? Kind::kNumber : Kind::kInteger);
    if (type == "string") {
      const int32_t id = NewNode(Kind::kString);
      BF_RETURN_IF_ERROR(Bounds(schema, pointer, "minLength", "maxLength", At(id)));
      return id;
    }
    if (type == "array") {
      const int32_t id = NewNode(Kind::kArray);
      BF_RETURN_IF_ERROR(Bounds(schema, pointer, "minItems", "maxItems", At(id)));
      auto items = schema.find("items");
      if (items != schema.end() && items->is_array()) {
        return SchemaError(pointer, "'items' as an array (tuples) is not supported");
      }
      if (items != schema.end() && *items == Json(false)) {
        At(id).max = 0;
        if (At(id).min > 0) return SchemaError(pointer, "'items': false with 'minItems' admits no value");
        BF_ASSIGN_OR_RETURN(int32_t any, Any());
        At(id).child = any;
        return id;
      }
      int32_t child = -1;
      if (items == schema.end()) {
        BF_ASSIGN_OR_RETURN(child, Any());
      } else {
        BF_ASSIGN_OR_RETURN(child, CompileAt(pointer + "/items", nesting + 1));
      }
      At(id).child = child;
      return id;
    }
    return CompileObject(schema, pointer, nesting);
  }

  StatusOr<int32_t> CompileObject(const Json& schema, const std::string& pointer, int nesting) {
    std::vector<std::string> required;
    if (auto r = schema.find("required"); r != schema.end()) {
      if (!r->is_array()) return SchemaError(pointer, "'required' must be an array of names");
      for (const Json& name : *r) {
        if (!name.is_string()) return SchemaError(pointer, "'required' must be an array of names");
        required.push_back(name.get<std::string>());
      }
    }
    auto properties = schema.find("properties");
    if (properties != schema.end() && !properties->is_object()) {
      return SchemaError(pointer, "'properties' must be an object");
    }
    auto additional = schema.find("additionalProperties");
    const bool declared = properties != schema.end() && !properties->empty();
    if (!declared) {
      if (!required.empty()) {
        return SchemaError(pointer, absl::StrCat("'required' lists '", required[0], "', which 'properties' lacks"));
      }
      if (additional != schema.end() && *additional == Json(false)) return NewNode(Kind::kObject);  // {} only
      const int32_t id = NewNode(Kind::kMap);
      int32_t child = -1;
      if (additional == schema.end() || *additional == Json(true)) {
        BF_ASSIGN_OR_RETURN(child, Any());
      } else {
        BF_ASSIGN_OR_RETURN(child, CompileAt(pointer + "/additionalProperties", nesting + 1));
      }
      At(id).child = child;
      return id;
    }
    if (properties->size() > JsonSchema::kMaxProperties) {
      return SchemaError(pointer, absl::StrCat("objects with more than ", JsonSchema::kMaxProperties,
                                               " properties are not supported"));
    }
    for (const std::string& name : required) {
      if (!properties->contains(name)) {
        return SchemaError(pointer, absl::StrCat("'required' lists '", name, "', which 'properties' lacks"));
      }
    }
    const int32_t id = NewNode(Kind::kObject);
    for (const auto& [name, value] : properties->items()) {
      JsonSchema::Property property;
      property.key = Json(name).dump();
      property.required = std::find(required.begin(), required.end(), name) != required.end();
      BF_ASSIGN_OR_RETURN(property.value,
                          CompileAt(pointer + "/properties/" + EscapePointerToken(name), nesting + 1));
      At(id).properties.push_back(std::move(property));
    }
    return id;
  }

  // The leaves (non-union nodes) a union stands for; an error for a union that reaches itself
  // through unions only.
  Status Leaves(int32_t id, std::vector<int32_t>& visiting, std::vector<int32_t>& out) {
    if (At(id).kind != Kind::kUnion) {
      if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
      return absl::OkStatus();
    }
    if (std::find(visiting.begin(), visiting.end(), id) != visiting.end()) {
      return SchemaError(pointer_of(id), "refers to itself with no object or array between");
    }
    visiting.push_back(id);
    for (int32_t member : members_[id]) BF_RETURN_IF_ERROR(Leaves(member, visiting, out));
    visiting.pop_back();
    return absl::OkStatus();
  }

  std::string pointer_of(int32_t id) const {
    for (const auto& [pointer, node] : by_pointer_) {
      if (node == id) return pointer;
    }
    return "";
  }

  // Fills each union's first-byte table (literal alternatives merged into one node) and every
  // node's min_depth.
  Status Finish() {
    const size_t original = nodes_.size();
    for (size_t u = 0; u < original; ++u) {
      const int32_t id = static_cast<int32_t>(u);
      if (At(id).kind != Kind::kUnion) continue;
      std::vector<int32_t> visiting, leaves;
      BF_RETURN_IF_ERROR(Leaves(id, visiting, leaves));
      std::vector<int32_t> literal_leaves;
      for (int32_t leaf : leaves) {
        if (At(leaf).kind == Kind::kLiterals) literal_leaves.push_back(leaf);
      }
      if (literal_leaves.size() > 1) {
        std::vector<std::string> merged;
        for (int32_t leaf : literal_leaves) {
          merged.insert(merged.end(), At(leaf).literals.begin(), At(leaf).literals.end());
        }
        std::sort(merged.begin(), merged.end());
        merged.erase(std::unique(merged.begin(), merged.end()), merged.end());
        const int32_t node = NewNode(Kind::kLiterals);
        At(node).literals = std::move(merged);
        std::erase_if(leaves, [this](int32_t leaf) { return At(leaf).kind == Kind::kLiterals; });
        leaves.push_back(node);
      }
      TagObjects(leaves);
      std::array<JsonSchema::Alternatives, JsonSchema::kFirstBytes> table{};
      for (int32_t leaf : leaves) {
        for (JsonSchema::FirstByte first : FirstBytes(At(leaf))) {
          JsonSchema::Alternatives& alternatives = table[first];
          if (alternatives.size == JsonSchema::kMaxAlternatives) {
            return SchemaError(pointer_of(id), absl::StrCat("more than ", JsonSchema::kMaxAlternatives,
                                                            " alternatives begin with the same kind of byte"));
          }
          alternatives.ids[alternatives.size++] = leaf;
        }
      }
      At(id).by_first = table;
    }
    if (!best_effort_) {
      for (int32_t id : one_of_) BF_RETURN_IF_ERROR(CheckExclusive(id));
    }
    // min_depth: from "too deep" for every node, lowered until nothing changes; a node lowered
    // sends the nodes that read it back to the queue. Values stop at kTooDeep, so each node is
    // lowered at most kTooDeep + 1 times: bounded work whatever the schema.
    std::vector<std::vector<int32_t>> readers(nodes_.size());
    for (const JsonSchema::Node& node : nodes_) {
      for (int32_t child : Reads(node)) readers[static_cast<size_t>(child)].push_back(node.id);
    }
    std::vector<int32_t> queue;
    for (JsonSchema::Node& node : nodes_) {
      node.min_depth = kTooDeep;
      queue.push_back(node.id);
    }
    while (!queue.empty()) {
      JsonSchema::Node& node = At(queue.back());
      queue.pop_back();
      const int32_t depth = MinDepth(node);
      if (depth >= node.min_depth) continue;
      node.min_depth = depth;
      for (int32_t reader : readers[static_cast<size_t>(node.id)]) queue.push_back(reader);
    }
    return absl::OkStatus();
  }

  // A union's object leaves, when every one's first declared property is the same required key
  // whose value is one string constant, different in each (a discriminator written first, as a
  // tool call's "name"), become one kTagged node: a value is then one path until the constant
  // is read and names its object, instead of a path per object (at most kMaxAlternatives).
  void TagObjects(std::vector<int32_t>& leaves) {
    std::string key;
    std::vector<std::pair<std::string, int32_t>> tags;  // constant, object
    for (int32_t leaf : leaves) {
      const JsonSchema::Node& node = At(leaf);
      if (node.kind == Kind::kMap) return;  // another object beginning alike
      if (node.kind != Kind::kObject) continue;
      if (node.properties.empty() || !node.properties[0].required) return;
      if (!tags.empty() && node.properties[0].key != key) return;
      key = node.properties[0].key;
      // Through unions by their members: their tables may not be filled yet.
      std::vector<int32_t> visiting, values;
      if (!Leaves(node.properties[0].value, visiting, values).ok() || values.size() != 1) return;
      const JsonSchema::Node& value = At(values[0]);
      if (value.kind != Kind::kLiterals || value.literals.size() != 1 || !value.literals[0].starts_with('"')) return;
      tags.emplace_back(value.literals[0], leaf);
    }
    if (tags.size() < 2) return;
    std::sort(tags.begin(), tags.end());
    for (size_t i = 1; i < tags.size(); ++i) {
      if (tags[i].first == tags[i - 1].first) return;  // two objects of one constant
    }
    const int32_t constants = NewNode(Kind::kLiterals);
    const int32_t tagged = NewNode(Kind::kTagged);
    for (const auto& [text, object] : tags) {
      At(constants).literals.push_back(text);
      At(tagged).tagged.push_back(object);
    }
    At(tagged).properties.push_back(JsonSchema::Property{key, constants, true});
    std::erase_if(leaves, [this](int32_t leaf) { return At(leaf).kind == Kind::kObject; });
    leaves.push_back(tagged);
  }

  // The constants a node admits when it admits nothing else (a literals node, or a union of
  // one), else null.
  const std::vector<std::string>* ConstantsOf(int32_t id) {
    const JsonSchema::Node* node = &At(id);
    if (node->kind == Kind::kUnion) {
      int32_t only = -1;
      for (const JsonSchema::Alternatives& alternatives : node->by_first) {
        for (uint8_t i = 0; i < alternatives.size; ++i) {
          if (only >= 0 && alternatives.ids[i] != only) return nullptr;
          only = alternatives.ids[i];
        }
      }
      if (only < 0) return nullptr;
      node = &At(only);
    }
    return node->kind == Kind::kLiterals ? &node->literals : nullptr;
  }

  // oneOf: a value must match exactly one alternative. Alternatives that begin differently are
  // exclusive; objects that begin alike must all require a property whose constants differ.
  Status CheckExclusive(int32_t id) {
    // The same alternative twice (through two references) matches every value twice.
    std::set<int32_t> seen_leaves;
    for (int32_t member : members_[id]) {
      std::vector<int32_t> visiting, leaves;
      BF_RETURN_IF_ERROR(Leaves(member, visiting, leaves));
      for (int32_t leaf : leaves) {
        if (!seen_leaves.insert(leaf).second) {
          return SchemaError(pointer_of(id), "oneOf alternatives overlap (one is listed twice)");
        }
      }
    }
    for (const JsonSchema::Alternatives& alternatives : At(id).by_first) {
      if (alternatives.size < 2) continue;
      const std::string refusal = "oneOf alternatives that begin alike must be objects told apart by a required "
                                  "property of different constants (or use anyOf)";
      const JsonSchema::Node& first = At(alternatives.ids[0]);
      if (first.kind != Kind::kObject) return SchemaError(pointer_of(id), refusal);
      bool told_apart = false;
      for (const JsonSchema::Property& candidate : first.properties) {
        std::set<std::string> seen;
        bool all = true;
        for (uint8_t i = 0; i < alternatives.size && all; ++i) {
          const JsonSchema::Node& object = At(alternatives.ids[i]);
          if (object.kind != Kind::kObject) return SchemaError(pointer_of(id), refusal);
          auto it = std::find_if(object.properties.begin(), object.properties.end(),
                                 [&](const JsonSchema::Property& p) { return p.key == candidate.key; });
          const std::vector<std::string>* constants =
              it != object.properties.end() && it->required ? ConstantsOf(it->value) : nullptr;
          all = constants != nullptr;
          for (size_t k = 0; all && k < constants->size(); ++k) all = seen.insert((*constants)[k]).second;
        }
        if (all) {
          told_apart = true;
          break;
        }
      }
      if (!told_apart) return SchemaError(pointer_of(id), refusal);
    }
    return absl::OkStatus();
  }

  static std::vector<JsonSchema::FirstByte> FirstBytes(const JsonSchema::Node& node) {
    switch (node.kind) {
      case Kind::kObject:
      case Kind::kMap:
      case Kind::kTagged:
        return {JsonSchema::kOpenObject};
      case Kind::kArray:
        return {JsonSchema::kOpenArray};
      case Kind::kString:
        return {JsonSchema::kQuote};
      case Kind::kNumber:
      case Kind::kInteger:
        return {JsonSchema::kNumeral};
      case Kind::kLiterals: {
        std::vector<JsonSchema::FirstByte> out;
        for (const std::string& text : node.literals) {
          const JsonSchema::FirstByte first = JsonSchema::ClassOf(static_cast<uint8_t>(text[0]));
          if (std::find(out.begin(), out.end(), first) == out.end()) out.push_back(first);
        }
        return out;
      }
      case Kind::kUnion:
        break;
    }
    return {};
  }

  // The nodes whose min_depth MinDepth(node) reads.
  static std::vector<int32_t> Reads(const JsonSchema::Node& node) {
    std::vector<int32_t> out;
    switch (node.kind) {
      case Kind::kObject:
        for (const JsonSchema::Property& p : node.properties) {
          if (p.required) out.push_back(p.value);
        }
        break;
      case Kind::kArray:
        if (node.min > 0) out.push_back(node.child);
        break;
      case Kind::kUnion:
        for (const JsonSchema::Alternatives& alternatives : node.by_first) {
          out.insert(out.end(), alternatives.ids.begin(), alternatives.ids.begin() + alternatives.size);
        }
        break;
      case Kind::kTagged:
        out = node.tagged;
        break;
      default:
        break;
    }
    return out;
  }

  int32_t MinDepth(const JsonSchema::Node& node) {
    const auto depth = [this](int32_t id) { return At(id).min_depth; };
    switch (node.kind) {
      case Kind::kObject: {
        int32_t deepest = 0;
        for (const JsonSchema::Property& p : node.properties) {
          if (p.required) deepest = std::max(deepest, depth(p.value));
        }
        return std::min(kTooDeep, 1 + deepest);
      }
      case Kind::kMap:
        return 1;
      case Kind::kArray:
        return std::min(kTooDeep, 1 + (node.min > 0 ? depth(node.child) : 0));
      case Kind::kUnion: {
        int32_t best = kTooDeep;
        for (const JsonSchema::Alternatives& alternatives : node.by_first) {
          for (uint8_t i = 0; i < alternatives.size; ++i) best = std::min(best, depth(alternatives.ids[i]));
        }
        return best;
      }
      case Kind::kTagged: {
        // The deepest object's: the constant may name any of them, and whichever it names must
        // still be finishable (JsonPath::Fits is asked once, at the '{').
        int32_t deepest = 0;
        for (int32_t object : node.tagged) deepest = std::max(deepest, depth(object));
        return deepest;
      }
      default:
        return 0;
    }
  }

  const Json& document_;
  const bool best_effort_;
  std::vector<JsonSchema::Node> nodes_;
  std::map<std::string, int32_t> by_pointer_;
  std::map<int32_t, std::vector<int32_t>> members_;  // union node -> its alternatives
  std::vector<int32_t> one_of_;                      // unions written as oneOf
  int32_t any_ = -1;
};

JsonSchema::FirstByte JsonSchema::ClassOf(uint8_t byte) {
  switch (byte) {
    case '{':
      return kOpenObject;
    case '[':
      return kOpenArray;
    case '"':
      return kQuote;
    case 't':
      return kTrue;
    case 'f':
      return kFalse;
    case 'n':
      return kNull;
    default:
      return byte == '-' || (byte >= '0' && byte <= '9') ? kNumeral : kFirstBytes;
  }
}

std::span<const int32_t> JsonSchema::Resolve(int32_t id, uint8_t byte) const {
  const Node& n = node(id);
  if (n.kind != Kind::kUnion) return std::span<const int32_t>(&n.id, 1);
  const FirstByte first = ClassOf(byte);
  if (first == kFirstBytes) return {};
  return std::span<const int32_t>(n.by_first[first].ids.data(), n.by_first[first].size);
}

StatusOr<std::shared_ptr<const JsonSchema>> JsonSchema::Compile(std::string_view text, bool best_effort) {
  if (text.size() > kMaxSchemaBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("json_schema has ", text.size(), " bytes, limit ", kMaxSchemaBytes));
  }
  if (Nesting(text) > kMaxSchemaNesting) {
    return absl::InvalidArgumentError(absl::StrCat("json_schema nests deeper than ", kMaxSchemaNesting, " levels"));
  }
  const Json document = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return absl::InvalidArgumentError("json_schema is not valid JSON");
  return JsonSchemaCompiler(document, best_effort).Run();
}

std::shared_ptr<const JsonSchema> JsonSchema::AnyObject() {
  static const std::shared_ptr<const JsonSchema> any_object = [] {
    StatusOr<std::shared_ptr<const JsonSchema>> schema = Compile(R"({"type": "object"})");
    if (!schema.ok()) std::abort();  // a constant schema: failing is a broken compiler
    return *schema;
  }();
  return any_object;
}

}  // namespace bitfleet::coordinator

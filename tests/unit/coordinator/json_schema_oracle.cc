#include "tests/unit/coordinator/json_schema_oracle.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace bitfleet::coordinator::testing {
namespace {

using Json = nlohmann::ordered_json;

// Characters as a validator counts them: code points.
size_t CodePoints(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

const Json* Resolve(const Json& root, const std::string& ref) {
  const Json* at = &root;
  size_t pos = 1;  // past '#'
  while (pos < ref.size()) {
    const size_t end = std::min(ref.find('/', pos + 1), ref.size());
    std::string token;
    for (size_t i = pos + 1; i < end; ++i) {
      if (ref[i] == '~' && i + 1 < end) {
        token.push_back(ref[++i] == '1' ? '/' : '~');
      } else {
        token.push_back(ref[i]);
      }
    }
    if (!at->is_object() || !at->contains(token)) return nullptr;
    at = &(*at)[token];
    pos = end;
  }
  return at;
}

bool HasType(const Json& v, const std::string& type) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "number") return v.is_number();
  if (type == "integer") {
    return v.is_number_integer() ||
           (v.is_number_float() && std::isfinite(v.get<double>()) && std::floor(v.get<double>()) == v.get<double>());
  }
  if (type == "boolean") return v.is_boolean();
  return type == "null" && v.is_null();
}

bool Valid(const Json& v, const Json& schema, const Json& root) {
  if (schema.is_boolean()) return schema.get<bool>();
  if (schema.contains("$ref")) {
    const Json* target = Resolve(root, schema["$ref"].get<std::string>());
    return target != nullptr && Valid(v, *target, root);
  }
  if (schema.contains("allOf")) {
    for (const Json& s : schema["allOf"]) {
      if (!Valid(v, s, root)) return false;
    }
  }
  if (schema.contains("anyOf")) {
    bool any = false;
    for (const Json& s : schema["anyOf"]) any = any || Valid(v, s, root);
    if (!any) return false;
  }
  if (schema.contains("oneOf")) {
    int n = 0;
    for (const Json& s : schema["oneOf"]) n += Valid(v, s, root);
    if (n != 1) return false;
  }
  if (schema.contains("type")) {
    const Json& t = schema["type"];
    bool ok = false;
    if (t.is_string()) {
      ok = HasType(v, t.get<std::string>());
    } else {
      for (const Json& name : t) ok = ok || HasType(v, name.get<std::string>());
    }
    if (!ok) return false;
  }
  if (schema.contains("const") && v != schema["const"]) return false;
  if (schema.contains("enum")) {
    bool listed = false;
    for (const Json& e : schema["enum"]) listed = listed || v == e;
    if (!listed) return false;
  }
  if (v.is_string()) {
    const size_t n = CodePoints(v.get<std::string>());
    if (schema.contains("minLength") && n < schema["minLength"].get<size_t>()) return false;
    if (schema.contains("maxLength") && n > schema["maxLength"].get<size_t>()) return false;
  }
  if (v.is_array()) {
    if (schema.contains("minItems") && v.size() < schema["minItems"].get<size_t>()) return false;
    if (schema.contains("maxItems") && v.size() > schema["maxItems"].get<size_t>()) return false;
    if (schema.contains("items")) {
      for (const Json& item : v) {
        if (!Valid(item, schema["items"], root)) return false;
      }
    }
  }
  if (v.is_object()) {
    const Json empty = Json::object();
    const Json& properties = schema.contains("properties") ? schema["properties"] : empty;
    if (schema.contains("required")) {
      for (const Json& name : schema["required"]) {
        if (!v.contains(name.get<std::string>())) return false;
      }
    }
    for (const auto& [key, value] : v.items()) {
      if (properties.contains(key)) {
        if (!Valid(value, properties[key], root)) return false;
      } else if (schema.contains("additionalProperties") && !Valid(value, schema["additionalProperties"], root)) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

bool ValidatesAgainst(std::string_view document, std::string_view schema) {
  const Json value = Json::parse(document.begin(), document.end(), nullptr, /*allow_exceptions=*/false);
  const Json root = Json::parse(schema.begin(), schema.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || root.is_discarded()) return false;
  return Valid(value, root, root);
}

size_t Feed(JsonState& state, const std::string& text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const JsonState before = state;
    if (!state.Advance(static_cast<uint8_t>(text[i]))) {
      EXPECT_EQ(state, before) << "a refused byte changed the state";
      return i;
    }
  }
  return text.size();
}

}  // namespace bitfleet::coordinator::testing

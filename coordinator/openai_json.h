// What the OpenAI API's parsers (openai_protocol.cc, openai_tools.cc) share over nlohmann's JSON
// values, sorted or ordered.
#pragma once

#include <string>

#include "core/status.h"

namespace bitfleet::coordinator {

// INVALID_ARGUMENT: "'field' what".
inline Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("'", field, "' ", what));
}

// The field, or null when it is absent or JSON null (OpenAI's clients send nulls for unset
// fields) or `object` is not an object.
template <typename Json>
const Json* FindField(const Json& object, const char* name) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace bitfleet::coordinator

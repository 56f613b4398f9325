// A JSON Schema validator for the subset coordinator/json_schema.h compiles, written
// independently of it (over parsed values, not bytes) to judge what the constrained decoder
// produces. Test code only: it assumes the schema compiled.
#pragma once

#include <string_view>

#include "nlohmann/json.hpp"

namespace bitfleet::coordinator::testing {

// Whether the JSON text `document` parses and validates against `schema` (also JSON text).
bool ValidatesAgainst(std::string_view document, std::string_view schema);

}  // namespace bitfleet::coordinator::testing

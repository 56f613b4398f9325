// Test helpers for JSON mode: a JSON Schema validator for the subset coordinator/json_schema.h
// compiles, written independently of it (over parsed values, not bytes) to judge what the
// constrained decoder produces (it assumes the schema compiled); and feeding text to a grammar.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "coordinator/json_grammar.h"

#include "nlohmann/json.hpp"

namespace bitfleet::coordinator::testing {

// Whether the JSON text `document` parses and validates against `schema` (also JSON text).
bool ValidatesAgainst(std::string_view document, std::string_view schema);

// Feeds `text`; returns the index of the first refused byte, or text.size() if all were taken.
// A refused byte must leave the state as it was (a gtest failure otherwise).
size_t Feed(JsonState& state, const std::string& text);

}  // namespace bitfleet::coordinator::testing

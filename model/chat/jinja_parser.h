// Parses a chat template (the Jinja subset of docs/chat-templates.md) into nodes. Throws
// JinjaError, naming the template line, for syntax errors and for constructs outside the subset
// (extends, include, import, call blocks, filter blocks, raw blocks, ...).
#pragma once

#include <string_view>

#include "model/chat/jinja_ast.h"

namespace bitfleet::chat::jinja {

// Nesting of expressions and blocks past this is refused (the parser recurses).
inline constexpr int kMaxNesting = 200;

NodeList Parse(std::string_view source);

}  // namespace bitfleet::chat::jinja

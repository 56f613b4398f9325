// Runs a parsed chat template (jinja_parser.h) against its variables and returns the text.
// Scoping follows Jinja: a for loop's body and a macro's body have their own scope (a `set`
// inside does not leak out, which is why templates use namespace()); if blocks do not.
//
// Limits keep a hostile or broken template from holding a server thread: the output and every
// string built are capped at `max_output_bytes`, the evaluation steps at `max_steps`, and
// macro calls nest at most `max_call_depth` deep. Throws JinjaError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "model/chat/jinja_ast.h"
#include "model/chat/jinja_value.h"

namespace bitfleet::chat::jinja {

struct RenderLimits {
  size_t max_output_bytes = 1 << 20;
  int64_t max_steps = 2'000'000;
  int max_call_depth = 64;
};

// Renders `program` with `variables` as its globals (beside the built-in ones: range,
// namespace, raise_exception, strftime_now). `program` must outlive the call.
std::string Render(const NodeList& program, const ValueDict& variables, const RenderLimits& limits);

}  // namespace bitfleet::chat::jinja

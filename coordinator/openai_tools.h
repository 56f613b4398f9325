// OpenAI's tool calls on /v1/chat/completions. With tool_choice "required" or a named function
// the answer is constrained (response_format json_schema, json_schema.h) to a call of one of the
// request's functions with arguments of its "parameters" schema; with "auto" (the default when
// tools are given) it is free text or, when it begins with '{', such a call (JSON_SCHEMA_OR_TEXT):
// a model-agnostic call format, which the system message, listing the functions, asks for. A
// call comes back as the message's tool_calls. "none" ignores the tools. docs/protocol.md,
// "Tool calls".
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bitfleet::coordinator {

struct OpenAiFunction {
  std::string name;         // [A-Za-z0-9_-], 1..64 characters
  std::string description;  // may be empty
  std::string parameters;   // a JSON Schema as JSON text, in the client's key order
  // OpenAI's "strict" (default false): parameters' keywords outside the subset are refused
  // rather than ignored (the call's schema is strict only when every function's is).
  bool strict = false;
};

// A call the answer must be.
struct OpenAiTools {
  std::vector<OpenAiFunction> functions;  // those the call may name
  // tool_choice named one function: the answer is its arguments alone. Else it is
  // {"name": ..., "arguments": {...}}.
  bool named = false;
  // tool_choice auto: the answer may be text instead.
  bool automatic = false;
};

struct OpenAiToolCall {
  std::string name;
  std::string arguments;  // JSON text
};

// Reads a chat body's "tools", "tool_choice" and "parallel_tool_calls" (`body` is the raw text:
// parameters keep the client's key order). nullopt: no call may be made (no tools, or
// tool_choice "none"). INVALID_ARGUMENT naming the field for malformed tools or an unknown named
// function.
StatusOr<std::optional<OpenAiTools>> ReadOpenAiTools(std::string_view body);

// The JSON Schema (text) an answer that makes a call must validate against.
std::string ToolCallSchema(const OpenAiTools& tools);

// What the system message tells the model: the functions and the answer's shape.
std::string ToolsPrompt(const OpenAiTools& tools);

// The call a finished answer makes; nullopt when `text` is not a whole call (a truncated answer).
std::optional<OpenAiToolCall> ParseToolCall(const OpenAiTools& tools, std::string_view text);

// Streaming a call's arguments as they are generated: the function's name and where its
// arguments begin in an answer constrained to ToolCallSchema(tools) (the name first, then the
// arguments, in the schema's order), once the answer has reached them; nullopt before.
struct ToolCallHead {
  std::string name;
  size_t arguments_begin = 0;
};
std::optional<ToolCallHead> FindToolCallHead(const OpenAiTools& tools, std::string_view text);

// How far the arguments' text can be sent: the whole answer (`finished`) ends them at their last
// character (before the call object's closing brace); a growing one holds back its trailing
// whitespace and, unless the arguments are the whole answer, closing braces (one may be the call
// object's).
size_t ToolCallArgumentsEnd(const OpenAiTools& tools, std::string_view text, const ToolCallHead& head, bool finished);

// How an earlier assistant turn's tool_calls (the body's "arguments" strings) are written back
// into the conversation: as the answer that made them ({"name", "arguments"} per call, one per
// line).
std::string ToolCallsAsText(const std::vector<OpenAiToolCall>& calls);

}  // namespace bitfleet::coordinator

// OpenAI's tool calls on /v1/chat/completions. With tool_choice "required" or a named function
// the answer is constrained (response_format json_schema, json_schema.h) to a call of one of the
// request's functions with arguments of its "parameters" schema; with "auto" (the default when
// tools are given) it is free text or, when it begins like a call, calls (JSON_SCHEMA_OR_TEXT):
// a model-agnostic call format, which the system message, listing the functions, asks for. With
// parallel_tool_calls true (off by default here) an answer may make several calls at once, as a
// JSON array of call objects. Calls come back as the message's tool_calls. "none" ignores the
// tools.
// docs/protocol.md, "Tool calls".
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
  // parallel_tool_calls (ReadOpenAiTools: false unless the body says true; never with `named`):
  // the answer may also be a JSON array of one or more call objects.
  bool parallel = false;
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

// Whether an answer under tool_choice auto whose first byte after whitespace is `first` makes
// calls ('{', or '[' with parallel calls) rather than text.
bool BeginsToolCall(const OpenAiTools& tools, char first);

// The calls a finished answer makes, in order; nullopt when `text` is not whole calls (a
// truncated answer).
std::optional<std::vector<OpenAiToolCall>> ParseToolCalls(const OpenAiTools& tools, std::string_view text);

// Streams the calls of an answer constrained to ToolCallSchema(tools) as it grows: a call opens
// once its name is known (the schema orders the name first), then its arguments' text follows
// in pieces, the model's own spacing kept; joined, one call's pieces are exactly its arguments'
// JSON text. Trailing whitespace is held back until more text shows whether the arguments go on.
class ToolCallStream {
 public:
  struct Delta {
    int call = 0;          // index among the answer's calls
    bool opens = false;    // the call's first delta: `name` is set
    std::string name;
    std::string arguments;  // a piece of the arguments' text (may be empty when opening)
  };

  explicit ToolCallStream(const OpenAiTools& tools) : tools_(tools) {}

  // The answer so far (each call the whole text, grown); `finished`: it is whole, so what was
  // held back goes out (a call cut short sends what its arguments have). Returns the new deltas.
  std::vector<Delta> Update(std::string_view text, bool finished);
  // Some call has opened.
  bool opened() const { return calls_ > 0; }

 private:
  enum class Phase { kStart, kHead, kArguments, kTail, kDone };
  // Advances the scan of the current call's arguments over text[scan_, end); true once the
  // value is whole (scan_ then its end).
  bool ScanArguments(std::string_view text);

  const OpenAiTools& tools_;
  Phase phase_ = Phase::kStart;
  bool array_ = false;       // the calls are in a JSON array
  int calls_ = 0;            // calls opened
  size_t pos_ = 0;           // where the next head or tail is parsed from
  size_t arguments_begin_ = 0;
  size_t sent_ = 0;          // the current call's arguments sent, up to this offset
  // The scan of the current arguments' value.
  size_t scan_ = 0;
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
};

// How an earlier assistant turn's tool_calls (the body's "arguments" strings) are written back
// into the conversation: as the answer that made them ({"name", "arguments"}; several as a JSON
// array of those).
std::string ToolCallsAsText(const std::vector<OpenAiToolCall>& calls);

}  // namespace bitfleet::coordinator

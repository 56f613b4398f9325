// The OpenAI-compatible HTTP API's messages (DESIGN.md §8; docs/protocol.md, "OpenAI-compatible
// HTTP"): request bodies of POST /v1/completions and /v1/chat/completions turned into the gRPC
// API's GenerateRequest (so both APIs share one validation, api_request.h), and the JSON bodies
// sent back: whole responses, server-sent-event chunks, errors and the model list.
//
// Pure functions over strings: no I/O, nothing throws (JSON is parsed without exceptions and
// every field's type is checked before it is read).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <optional>
#include <string_view>
#include <vector>

#include "bitfleet/v1/inference.pb.h"
#include "coordinator/openai_tools.h"
#include "core/status.h"

namespace bitfleet::coordinator {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

// The most choices one request may ask for: prompts (completions' batch) × n.
inline constexpr int kMaxOpenAiChoices = 64;

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  // The request of every choice, in OpenAI's index order: prompt by prompt (completions take a
  // batch of prompts), n choices each. They differ only in the prompt and, when the body names
  // a seed, in the seed: choice j of a prompt samples with seed + j.
  std::vector<v1::GenerateRequest> choices;  // at least one
  int n = 1;  // choices per prompt
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  // Completions' "echo": each choice's text (and log probabilities, which then include the
  // prompt's: GenerateRequest.prompt_logprobs) starts with its prompt.
  bool echo = false;
  // "max_tokens": 0 with echo: the prompt alone, scored, is the answer. The choices run with
  // max_tokens 1 (a prompt's last position is computed anyway); that token is not shown.
  bool prompt_only = false;
  // Chat with tools and tool_choice "required" or a named function: the answer is a call
  // (openai_tools.h), constrained by json_schema, shown to the model in the system message and
  // returned as the message's tool_calls.
  std::optional<OpenAiTools> tools;

  // The first choice's request: model, prompt (text or token ids) or chat, max_tokens, sampling,
  // stop, ignore_eos, logprobs.
  const v1::GenerateRequest& generate() const { return choices.front(); }
};

// Parses a request body. INVALID_ARGUMENT, naming the field, for malformed JSON, a field of the
// wrong type, more than kMaxOpenAiChoices choices, and features this server does not offer
// (best_of other than 1 or n, suffix, chat's echo, functions, tool_choice auto, non-text message
// content, a response_format other than text, json_object and json_schema; a json_schema's schema
// is checked by the request validation, not here). Chat tools: openai_tools.h. Log
// probabilities: completions' "logprobs": N (0..20) and chat's "logprobs": true with
// "top_logprobs": N (0..20) set GenerateRequest.logprobs / top_logprobs; completions' "echo":
// true with "logprobs" also sets prompt_logprobs.
// Unknown fields are ignored, as OpenAI's own clients send extra ones. Defaults follow OpenAI's:
// temperature 1, max_tokens 16 for completions and the rest of the context for chat.
StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body);

// What identifies one response across its chunks.
struct OpenAiResponseHeader {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string id;     // "cmpl-..." / "chatcmpl-..."
  std::string model;  // the served model's name
  int64_t created = 0;  // Unix seconds
  // stream_options.include_usage: every chunk before the usage chunk carries "usage": null, as
  // OpenAI's do (clients that read chunk.usage find the field).
  bool include_usage = false;
  // The request's forced tool call (OpenAiRequest::tools), or null: a whole answer is returned as
  // tool_calls (finish_reason "tool_calls"); one cut short by max_tokens as content.
  std::shared_ptr<const OpenAiTools> tools = nullptr;  // owned: a streamed response outlives the request
};

// POST /tokenize (vLLM's extension): {"prompt": text, "add_special_tokens": bool (default true)}
// or {"messages": [...]} (a chat, rendered as chat completions render it).
struct OpenAiTokenizeRequest {
  std::optional<std::string> prompt;
  std::optional<v1::ChatMessages> chat;
  bool add_special = true;
};
StatusOr<OpenAiTokenizeRequest> ParseOpenAiTokenize(std::string_view body);
// {"count", "max_model_len", "tokens"}.
std::string OpenAiTokenizeBody(const std::vector<int32_t>& tokens, int32_t max_context);
// POST /detokenize: {"tokens": [ids]}.
StatusOr<std::vector<int32_t>> ParseOpenAiDetokenize(std::string_view body);
// {"prompt": text}.
std::string OpenAiDetokenizeBody(const std::string& text);

// "stop" (end of sequence, stop string) or "length".
const char* OpenAiFinishReason(v1::FinishReason reason);

// One generated token's log probabilities as the bodies show them. A token's bytes may be part
// of a UTF-8 character: `token` is its text with such bytes as U+FFFD (valid UTF-8), `bytes` the
// bytes themselves (chat's "bytes" lists them exactly).
struct OpenAiTopLogprob {
  int32_t token_id = -1;
  std::string token;
  std::string bytes;
  float logprob = 0.0f;
};
struct OpenAiTokenLogprobs {
  int32_t token_id = -1;
  std::string token;
  std::string bytes;
  float logprob = 0.0f;
  std::vector<OpenAiTopLogprob> top;  // best first
  // False for an echoed prompt's first token, which has no context: its token_logprobs and
  // top_logprobs entries are null (completions only).
  bool scored = true;
};

// One choice of a whole response.
struct OpenAiChoice {
  std::string text;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  const std::vector<OpenAiTokenLogprobs>* logprobs = nullptr;  // null: "logprobs": null
};
// The whole (non-streamed) response with `choices` (index = position) and their summed `usage`.
std::string OpenAiCompletionBody(const OpenAiResponseHeader& header, const std::vector<OpenAiChoice>& choices,
                                 const v1::Usage& usage);
// The whole (non-streamed) response: text_completion or chat.completion. `logprobs` (null:
// "logprobs": null) in the endpoint's format: completions' {tokens, token_logprobs,
// top_logprobs (the top N and the chosen token, by token text), text_offset (characters into
// the tokens' texts joined, which is the completion unless a character spans tokens)}, chat's
// {content: [{token, logprob, bytes, top_logprobs: [...]}]}.
std::string OpenAiCompletionBody(const OpenAiResponseHeader& header, const std::string& text,
                                 v1::FinishReason finish, const v1::Usage& usage,
                                 const std::vector<OpenAiTokenLogprobs>* logprobs = nullptr);
// One streamed chunk (text_completion or chat.completion.chunk) carrying `text` and, when not
// UNSPECIFIED, the finish reason, for choice `index`. `first` adds the chat's assistant role to
// the delta.
// `logprobs` as above, for this chunk's tokens, whose first starts `text_offset` characters into
// the completion.
std::string OpenAiChunkBody(const OpenAiResponseHeader& header, const std::string& text, v1::FinishReason finish,
                            bool first, const std::vector<OpenAiTokenLogprobs>* logprobs = nullptr,
                            int64_t text_offset = 0, int index = 0);
// A streamed tool call (header.tools) sent whole once the answer is (one that ended before its
// arguments began): one chunk whose delta has the role and the tool_calls, finish_reason
// "tool_calls" (as content, with its finish reason, when `text` is not a whole call).
std::string OpenAiToolCallChunkBody(const OpenAiResponseHeader& header, const std::string& text,
                                    v1::FinishReason finish, int index);
// A streamed tool call as it is generated: the first chunk opens call `call_index` of choice
// `index` (the role, the call's id, type and function name, empty arguments); the next ones
// carry pieces of its arguments' JSON text; the last one of the answer also the finish reason
// ("tool_calls" when `complete`, the answer being whole calls, else the request's own, e.g.
// "length").
std::string OpenAiToolCallHeadChunkBody(const OpenAiResponseHeader& header, const std::string& name, int index,
                                        int call_index);
std::string OpenAiToolCallArgumentsChunkBody(const OpenAiResponseHeader& header, const std::string& arguments,
                                             v1::FinishReason finish, bool complete, int index, int call_index);
// The id of call `call_index` of choice `index`: "call_<response id>_<choice>_<call>".
std::string ToolCallId(const OpenAiResponseHeader& header, int index, int call_index);
// The characters `entries`' texts add to the completion (the next chunk's text_offset).
int64_t OpenAiLogprobsLength(const std::vector<OpenAiTokenLogprobs>& entries);
// The last chunk under stream_options.include_usage: no choices, the usage.
std::string OpenAiUsageChunkBody(const OpenAiResponseHeader& header, const v1::Usage& usage);
// {"error": {"message", "type", "param", "code"}} for a failed status.
std::string OpenAiErrorBody(const Status& status);
// GET /v1/models: the one served model.
std::string OpenAiModelsBody(const std::string& model, int64_t created, int32_t max_context);

// The HTTP status for a status code (400, 401, 403, 404, 429, 499, 503, 504, 500, ...).
int HttpStatusOf(absl::StatusCode code);

}  // namespace bitfleet::coordinator

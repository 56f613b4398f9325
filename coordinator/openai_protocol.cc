#include "coordinator/openai_protocol.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <system_error>
#include <utility>

#include "coordinator/executor.h"
#include "coordinator/openai_json.h"
#include "nlohmann/json.hpp"

namespace bitfleet::coordinator {
namespace {

using Json = nlohmann::json;

const Json* Find(const Json& object, const char* name) { return FindField(object, name); }

StatusOr<std::optional<double>> Number(const Json& object, const char* name) {
  const Json* value = Find(object, name);
  if (value == nullptr) return std::optional<double>();
  if (!value->is_number()) return FieldError(name, "must be a number");
  return std::optional<double>(value->get<double>());
}

StatusOr<std::optional<int64_t>> Integer(const Json& object, const char* name) {
  const Json* value = Find(object, name);
  if (value == nullptr) return std::optional<int64_t>();
  if (value->is_number_unsigned()) {
    const uint64_t v = value->get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return FieldError(name, "is out of range");
    return std::optional<int64_t>(static_cast<int64_t>(v));
  }
  if (!value->is_number_integer()) return FieldError(name, "must be an integer");
  return std::optional<int64_t>(value->get<int64_t>());
}

StatusOr<std::optional<bool>> Bool(const Json& object, const char* name) {
  const Json* value = Find(object, name);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) return FieldError(name, "must be true or false");
  return std::optional<bool>(value->get<bool>());
}

// A float sampling field, copied into the proto's optional when present. A double beyond float's
// range is refused here: converting it to float is undefined behaviour, not infinity.
template <typename Setter>
Status CopyFloat(const Json& object, const char* name, Setter set) {
  BF_ASSIGN_OR_RETURN(std::optional<double> value, Number(object, name));
  if (!value) return absl::OkStatus();
  if (!(std::fabs(*value) <= std::numeric_limits<float>::max())) return FieldError(name, "is out of range");
  set(static_cast<float>(*value));
  return absl::OkStatus();
}

// A field this server does not implement: accepted only absent, null or at its no-op value.
Status Unsupported(const Json& object, const char* name, const Json& no_op, const std::string& what) {
  const Json* value = Find(object, name);
  if (value == nullptr || *value == no_op) return absl::OkStatus();
  return FieldError(name, absl::StrCat("is not supported (", what, ")"));
}

// OpenAI's logit_bias: {"<token id>": bias, ...}. Keys must be decimal token ids; values are
// range-checked by the request validation, like the other sampling fields.
Status ReadLogitBias(const Json& body, v1::SamplingParams& sampling) {
  const Json* bias = Find(body, "logit_bias");
  if (bias == nullptr) return absl::OkStatus();
  if (!bias->is_object()) return FieldError("logit_bias", "must be an object of token ids to numbers");
  for (const auto& [key, value] : bias->items()) {
    int32_t token = 0;
    const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), token);
    if (key.empty() || error != std::errc() || end != key.data() + key.size()) {
      return FieldError("logit_bias", absl::StrCat("key '", key, "' is not a token id"));
    }
    if (!value.is_number()) return FieldError("logit_bias", absl::StrCat("value of token ", key, " must be a number"));
    const double v = value.get<double>();
    if (!(std::fabs(v) <= std::numeric_limits<float>::max())) {
      return FieldError("logit_bias", absl::StrCat("value of token ", key, " is out of range"));
    }
    if (!sampling.mutable_logit_bias()->insert({token, static_cast<float>(v)}).second) {
      return FieldError("logit_bias", absl::StrCat("token ", token, " is given twice"));
    }
  }
  return absl::OkStatus();
}

// response_format: {"type": "text"} (the default), {"type": "json_object"} or
// {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}. The
// schema is taken from `raw` parsed again keeping key order: properties are generated in the
// order the client listed them (the body's parse sorts keys).
Status ReadResponseFormat(const Json& body, std::string_view raw, v1::GenerateRequest& out) {
  const Json* format = Find(body, "response_format");
  if (format == nullptr) return absl::OkStatus();
  const Json* type = format->is_object() ? Find(*format, "type") : nullptr;
  if (type == nullptr || !type->is_string()) return FieldError("response_format", "must be an object with a 'type'");
  const std::string name = type->get<std::string>();
  if (name == "text") return absl::OkStatus();
  if (name == "json_object") {
    out.set_response_format(v1::RESPONSE_FORMAT_JSON_OBJECT);
    return absl::OkStatus();
  }
  if (name != "json_schema") {
    return FieldError("response_format",
                      absl::StrCat("type '", name, "' is not one of text, json_object, json_schema"));
  }
  const Json* spec = Find(*format, "json_schema");
  if (spec == nullptr || !spec->is_object()) {
    return FieldError("response_format", "of type json_schema needs a 'json_schema' object");
  }
  const Json* schema_name = Find(*spec, "name");
  if (schema_name != nullptr && !schema_name->is_string()) return FieldError("json_schema.name", "must be a string");
  const Json* strict = Find(*spec, "strict");
  if (strict != nullptr && !strict->is_boolean()) return FieldError("json_schema.strict", "must be true or false");
  out.set_response_format(v1::RESPONSE_FORMAT_JSON_SCHEMA);
  // OpenAI's default is not strict: keywords outside the subset are then ignored, not refused.
  out.set_json_schema_best_effort(strict == nullptr || !strict->get<bool>());
  if (Find(*spec, "schema") == nullptr) {
    out.set_json_schema("{}");  // no schema: any JSON value
    return absl::OkStatus();
  }
  const auto ordered = nlohmann::ordered_json::parse(raw.begin(), raw.end(), nullptr, /*allow_exceptions=*/false);
  const nlohmann::ordered_json* schema = &ordered;
  for (const char* key : {"response_format", "json_schema", "schema"}) {
    auto it = schema->is_object() ? schema->find(key) : schema->end();
    if (it == schema->end()) return absl::InternalError("the request body parsed differently the second time");
    schema = &*it;
  }
  out.set_json_schema(schema->dump());
  return absl::OkStatus();
}

Status ReadSampling(const Json& body, v1::GenerateRequest& out) {
  v1::SamplingParams& sampling = *out.mutable_sampling();
  BF_RETURN_IF_ERROR(CopyFloat(body, "temperature", [&](float v) { sampling.set_temperature(v); }));
  BF_RETURN_IF_ERROR(CopyFloat(body, "top_p", [&](float v) { sampling.set_top_p(v); }));
  BF_RETURN_IF_ERROR(CopyFloat(body, "min_p", [&](float v) { sampling.set_min_p(v); }));
  BF_RETURN_IF_ERROR(CopyFloat(body, "presence_penalty", [&](float v) { sampling.set_presence_penalty(v); }));
  BF_RETURN_IF_ERROR(CopyFloat(body, "frequency_penalty", [&](float v) { sampling.set_frequency_penalty(v); }));
  BF_RETURN_IF_ERROR(CopyFloat(body, "repetition_penalty", [&](float v) { sampling.set_repeat_penalty(v); }));
  BF_ASSIGN_OR_RETURN(std::optional<int64_t> top_k, Integer(body, "top_k"));
  if (top_k) {
    // -1 is "off" in vLLM's dialect, 0 in ours.
    if (*top_k < -1 || *top_k > std::numeric_limits<int32_t>::max()) return FieldError("top_k", "is out of range");
    sampling.set_top_k(*top_k == -1 ? 0 : static_cast<int32_t>(*top_k));
  }
  BF_RETURN_IF_ERROR(ReadLogitBias(body, sampling));
  const Json* seed = Find(body, "seed");
  if (seed != nullptr) {
    if (!seed->is_number_integer()) return FieldError("seed", "must be an integer");
    if (!seed->is_number_unsigned() && seed->get<int64_t>() < 0) return FieldError("seed", "must not be negative");
    sampling.set_seed(seed->get<uint64_t>());
  }
  return absl::OkStatus();
}

Status ReadStop(const Json& body, v1::GenerateRequest& out) {
  const Json* stop = Find(body, "stop");
  if (stop == nullptr) return absl::OkStatus();
  if (stop->is_string()) {
    out.add_stop(stop->get<std::string>());
    return absl::OkStatus();
  }
  if (!stop->is_array()) return FieldError("stop", "must be a string or an array of strings");
  for (const Json& item : *stop) {
    if (!item.is_string()) return FieldError("stop", "must be a string or an array of strings");
    out.add_stop(item.get<std::string>());
  }
  return absl::OkStatus();
}

Status ReadMaxTokens(const Json& body, const char* name, v1::GenerateRequest& out, bool& found) {
  BF_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens, Integer(body, name));
  if (!max_tokens) return absl::OkStatus();
  if (*max_tokens < 1) return FieldError(name, "must be at least 1");
  // Larger than any context: ParseGenerateRequest names the context in its refusal.
  out.set_max_tokens(static_cast<uint32_t>(std::min<int64_t>(*max_tokens, std::numeric_limits<uint32_t>::max())));
  found = true;
  return absl::OkStatus();
}

// An array of token ids (`field` names it in errors, `what` says what it must be).
StatusOr<std::vector<int32_t>> TokenIdArray(const Json& array, const std::string& field, const char* what) {
  if (!array.is_array()) return FieldError(field, what);
  std::vector<int32_t> ids;
  for (const Json& id : array) {
    if (!id.is_number_integer()) return FieldError(field, what);
    const int64_t value = id.get<int64_t>();
    // Out-of-vocabulary ids are refused later (validation, the tokenizer); keep them out of
    // int32 range here.
    if (value < 0 || value > std::numeric_limits<int32_t>::max()) {
      return FieldError(field, "has a negative or huge token id");
    }
    ids.push_back(static_cast<int32_t>(value));
  }
  return ids;
}

// One prompt (`field` names it in errors): text or token ids, into `out`.
Status ReadOnePrompt(const Json& prompt, const std::string& field, v1::GenerateRequest& out) {
  if (prompt.is_string()) {
    out.set_prompt(prompt.get<std::string>());
    return absl::OkStatus();
  }
  if (prompt.is_array() && prompt.empty()) return FieldError(field, "is empty");
  BF_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                      TokenIdArray(prompt, field, "must be a string or an array of token ids"));
  out.mutable_prompt_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
  return absl::OkStatus();
}

// Completions' prompts: a string, an array of token ids, or an array of several of either (a
// batch, one request per prompt); each with only its prompt set.
StatusOr<std::vector<v1::GenerateRequest>> ReadPrompts(const Json& body) {
  const Json* prompt = Find(body, "prompt");
  if (prompt == nullptr) return FieldError("prompt", "is required");
  std::vector<v1::GenerateRequest> prompts;
  if (!prompt->is_array() || prompt->empty() || (*prompt)[0].is_number()) {
    BF_RETURN_IF_ERROR(ReadOnePrompt(*prompt, "prompt", prompts.emplace_back()));
    return prompts;
  }
  if (prompt->size() > static_cast<size_t>(kMaxOpenAiChoices)) {
    return FieldError("prompt", absl::StrCat("holds ", prompt->size(), " prompts; at most ", kMaxOpenAiChoices,
                                             " per request"));
  }
  for (size_t k = 0; k < prompt->size(); ++k) {
    BF_RETURN_IF_ERROR(ReadOnePrompt((*prompt)[k], absl::StrCat("prompt[", k, "]"), prompts.emplace_back()));
  }
  return prompts;
}

// "n" (choices per prompt) and "best_of", which must equal it when given (the choices are not
// ranked): at most kMaxOpenAiChoices choices in all.
StatusOr<int> ReadChoices(const Json& body, size_t prompts) {
  BF_ASSIGN_OR_RETURN(std::optional<int64_t> n, Integer(body, "n"));
  const int64_t per_prompt = n.value_or(1);
  if (per_prompt < 1) return FieldError("n", "must be at least 1");
  if (per_prompt * static_cast<int64_t>(prompts) > kMaxOpenAiChoices) {
    return FieldError("n", absl::StrCat("asks for ", per_prompt * static_cast<int64_t>(prompts), " choices (", prompts,
                                        " prompt(s) × ", per_prompt, "); at most ", kMaxOpenAiChoices, " per request"));
  }
  BF_ASSIGN_OR_RETURN(std::optional<int64_t> best_of, Integer(body, "best_of"));
  if (best_of && *best_of != 1 && *best_of != per_prompt) {
    return FieldError("best_of", "is not supported other than 1 or equal to n (the choices are not ranked)");
  }
  return static_cast<int>(per_prompt);
}

// A message's content: a string, or an array of text parts (joined).
StatusOr<std::string> ReadContent(const Json& message, size_t index) {
  const std::string field = absl::StrCat("messages[", index, "].content");
  const Json* content = Find(message, "content");
  if (content == nullptr) return std::string();  // an assistant turn that called tools
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) return FieldError(field, "must be a string or an array of text parts");
  std::string text;
  for (const Json& part : *content) {
    const Json* type = part.is_object() ? Find(part, "type") : nullptr;
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text") {
      return FieldError(field, "may hold text parts only (this server serves a text model)");
    }
    const Json* part_text = Find(part, "text");
    if (part_text == nullptr || !part_text->is_string()) return FieldError(field, "has a text part without text");
    text += part_text->get<std::string>();
  }
  return text;
}

// An assistant message's "tool_calls": [{"id", "type": "function", "function": {"name",
// "arguments": JSON text}}].
StatusOr<std::vector<OpenAiToolCall>> ReadToolCalls(const Json& message, size_t index) {
  std::vector<OpenAiToolCall> calls;
  const Json* list = Find(message, "tool_calls");
  if (list == nullptr) return calls;
  const std::string field = absl::StrCat("messages[", index, "].tool_calls");
  if (!list->is_array()) return FieldError(field, "must be an array");
  for (const Json& call : *list) {
    const Json* function = call.is_object() ? Find(call, "function") : nullptr;
    const Json* name = function != nullptr && function->is_object() ? Find(*function, "name") : nullptr;
    const Json* arguments = name != nullptr ? Find(*function, "arguments") : nullptr;
    if (name == nullptr || !name->is_string() || (arguments != nullptr && !arguments->is_string())) {
      return FieldError(field, "must hold {\"function\": {\"name\": string, \"arguments\": string}} calls");
    }
    calls.push_back({name->get<std::string>(), arguments != nullptr ? arguments->get<std::string>() : "{}"});
  }
  return calls;
}

// A forced tool call: the answer's schema, and the functions shown to the model at the end of
// the system message (one is added when the conversation has none).
Status ApplyTools(const OpenAiTools& tools, v1::GenerateRequest& generate) {
  if (generate.response_format() != v1::RESPONSE_FORMAT_TEXT) {
    return FieldError("response_format", "cannot be combined with tools (a call has its own shape)");
  }
  generate.set_response_format(tools.automatic ? v1::RESPONSE_FORMAT_JSON_SCHEMA_OR_TEXT
                                               : v1::RESPONSE_FORMAT_JSON_SCHEMA);
  generate.set_json_schema(ToolCallSchema(tools));
  generate.set_json_schema_best_effort(!std::all_of(tools.functions.begin(), tools.functions.end(),
                                                    [](const OpenAiFunction& f) { return f.strict; }));
  auto& messages = *generate.mutable_chat()->mutable_messages();
  if (messages.empty() || messages.Get(0).role() != "system") {
    messages.Add()->set_role("system");
    for (int i = messages.size() - 1; i > 0; --i) messages.SwapElements(i, i - 1);
  }
  v1::ChatMessage& system = *messages.Mutable(0);
  system.set_content(system.content().empty() ? ToolsPrompt(tools)
                                              : absl::StrCat(system.content(), "\n\n", ToolsPrompt(tools)));
  return absl::OkStatus();
}

Status ReadMessages(const Json& body, v1::GenerateRequest& out) {
  const Json* messages = Find(body, "messages");
  if (messages == nullptr) return FieldError("messages", "is required");
  if (!messages->is_array()) return FieldError("messages", "must be an array");
  v1::ChatMessages& chat = *out.mutable_chat();
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    if (!message.is_object()) return FieldError(absl::StrCat("messages[", i, "]"), "must be an object");
    const Json* role = Find(message, "role");
    if (role == nullptr || !role->is_string()) return FieldError(absl::StrCat("messages[", i, "].role"), "is required");
    std::string name = role->get<std::string>();
    if (name == "developer") name = "system";  // OpenAI's newer name for the system turn
    if (name != "system" && name != "user" && name != "assistant" && name != "tool") {
      return FieldError(absl::StrCat("messages[", i, "].role"),
                        absl::StrCat("'", name, "' is not supported (system, developer, user, assistant, tool)"));
    }
    BF_ASSIGN_OR_RETURN(std::string content, ReadContent(message, i));
    if (name == "assistant") {
      // An earlier forced call, written back as the answer that made it.
      BF_ASSIGN_OR_RETURN(std::vector<OpenAiToolCall> calls, ReadToolCalls(message, i));
      if (!calls.empty()) content = content.empty() ? ToolCallsAsText(calls) : content + "\n" + ToolCallsAsText(calls);
    }
    v1::ChatMessage& added = *chat.add_messages();
    added.set_role(std::move(name));
    added.set_content(std::move(content));
  }
  // The chat template's options, as vLLM names them.
  BF_ASSIGN_OR_RETURN(std::optional<bool> generation_prompt, Bool(body, "add_generation_prompt"));
  if (generation_prompt.has_value()) chat.set_add_generation_prompt(*generation_prompt);
  BF_ASSIGN_OR_RETURN(std::optional<bool> continue_final, Bool(body, "continue_final_message"));
  chat.set_continue_final_message(continue_final.value_or(false));
  const Json* kwargs = Find(body, "chat_template_kwargs");
  if (kwargs != nullptr && !kwargs->is_null()) {
    if (!kwargs->is_object()) return FieldError("chat_template_kwargs", "must be an object");
    chat.set_template_kwargs(kwargs->dump());
  }
  return absl::OkStatus();
}

Status RefuseUnsupported(OpenAiEndpoint endpoint, const Json& body) {
  if (endpoint == OpenAiEndpoint::kCompletions) {
    BF_RETURN_IF_ERROR(Unsupported(body, "suffix", "", "no insertion"));
  } else {
    BF_RETURN_IF_ERROR(Unsupported(body, "echo", false, "completions echo their prompt; chat does not"));
    BF_RETURN_IF_ERROR(Unsupported(body, "functions", Json::array(), "use 'tools'"));
  }
  return absl::OkStatus();
}

Json UsageJson(const v1::Usage& usage) {
  return Json{{"prompt_tokens", usage.prompt_tokens()},
              {"completion_tokens", usage.completion_tokens()},
              {"total_tokens", usage.prompt_tokens() + usage.completion_tokens()},
              {"prompt_tokens_details", {{"cached_tokens", usage.cached_prompt_tokens()}}}};
}

Json HeaderJson(const OpenAiResponseHeader& header, const char* object) {
  return Json{{"id", header.id}, {"object", object}, {"created", header.created}, {"model", header.model}};
}

// Text from the model is whole UTF-8 characters, but a model can emit byte tokens that never
// form one: replace those (U+FFFD) rather than fail the response.
std::string Dump(const Json& json) { return json.dump(-1, ' ', false, Json::error_handler_t::replace); }

Json FinishJson(v1::FinishReason finish) {
  return finish == v1::FINISH_REASON_UNSPECIFIED ? Json(nullptr) : Json(OpenAiFinishReason(finish));
}

// A status code's HTTP status and OpenAI error type, in one table so the two never disagree.
struct HttpError {
  int status;
  const char* type;
};
HttpError HttpErrorOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return {200, ""};
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return {400, "invalid_request_error"};
    case absl::StatusCode::kUnauthenticated:
      return {401, "authentication_error"};
    case absl::StatusCode::kPermissionDenied:
      return {403, "permission_error"};
    case absl::StatusCode::kNotFound:
      return {404, "not_found_error"};
    case absl::StatusCode::kResourceExhausted:
      return {429, "rate_limit_error"};
    case absl::StatusCode::kCancelled:
      return {499, "server_error"};  // the client closed the request (nginx's convention)
    case absl::StatusCode::kUnimplemented:
      return {501, "server_error"};
    case absl::StatusCode::kUnavailable:
      return {503, "service_unavailable"};
    case absl::StatusCode::kDeadlineExceeded:
      return {504, "timeout"};
    default:
      return {500, "server_error"};
  }
}

// A request body's shape, checked by a SAX pass before the document is built: a parsed JSON
// document costs 10-80x its text (a node per value, a map node per key), so 4 MiB of tiny values
// would take hundreds of MB per request. The pass keeps nothing and stops at the first excess.
class ShapeCheck {
 public:
  static constexpr int kMaxDepth = 32;               // requests nest 5 deep at most
  static constexpr size_t kMaxEvents = size_t{1} << 20;  // values, keys and containers

  // OK, or INVALID_ARGUMENT for malformed JSON or a body past the limits.
  static Status Run(std::string_view body) {
    ShapeCheck check;
    if (Json::sax_parse(body.begin(), body.end(), &check)) return absl::OkStatus();
    return absl::InvalidArgumentError(check.error_.empty() ? "the request body is not valid JSON" : check.error_);
  }

  bool null() { return Count(); }
  bool boolean(bool) { return Count(); }
  bool number_integer(Json::number_integer_t) { return Count(); }
  bool number_unsigned(Json::number_unsigned_t) { return Count(); }
  bool number_float(Json::number_float_t, const std::string&) { return Count(); }
  bool string(std::string&) { return Count(); }
  bool binary(Json::binary_t&) { return Count(); }
  bool key(std::string&) { return Count(); }
  bool start_object(size_t) { return Enter(); }
  bool start_array(size_t) { return Enter(); }
  bool end_object() { return Leave(); }
  bool end_array() { return Leave(); }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

 private:
  bool Count() {
    if (++events_ <= kMaxEvents) return true;
    error_ = absl::StrCat("the request body holds more than ", kMaxEvents, " JSON values");
    return false;
  }
  bool Enter() {
    if (++depth_ <= kMaxDepth) return Count();
    error_ = absl::StrCat("the request body nests deeper than ", kMaxDepth, " levels");
    return false;
  }
  bool Leave() {
    --depth_;
    return true;
  }

  size_t events_ = 0;
  int depth_ = 0;
  std::string error_;
};

// A request body as a JSON object: the shape check first (depth, value count), then the parse.
StatusOr<Json> ParseBodyObject(std::string_view body) {
  BF_RETURN_IF_ERROR(ShapeCheck::Run(body));
  Json json = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("the request body is not valid JSON");
  if (!json.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  return json;
}

// Completions: "logprobs": N, the chosen token's and the N most likely; chat: "logprobs": true,
// with "top_logprobs": N. Null or absent: none.
Status ReadLogprobs(OpenAiEndpoint endpoint, const Json& body, v1::GenerateRequest& out) {
  const auto top = [&](const char* name) -> Status {
    BF_ASSIGN_OR_RETURN(std::optional<int64_t> n, Integer(body, name));
    if (!n) return absl::OkStatus();
    if (*n < 0 || *n > kMaxTopLogprobs) {
      return FieldError(name, absl::StrCat("must be in [0, ", kMaxTopLogprobs, "]"));
    }
    out.set_top_logprobs(static_cast<uint32_t>(*n));
    return absl::OkStatus();
  };
  if (endpoint == OpenAiEndpoint::kCompletions) {
    if (Find(body, "logprobs") == nullptr) return absl::OkStatus();
    out.set_logprobs(true);
    return top("logprobs");
  }
  BF_ASSIGN_OR_RETURN(std::optional<bool> logprobs, Bool(body, "logprobs"));
  out.set_logprobs(logprobs.value_or(false));
  BF_RETURN_IF_ERROR(top("top_logprobs"));
  if (out.top_logprobs() > 0 && !out.logprobs()) return FieldError("top_logprobs", "needs \"logprobs\": true");
  return absl::OkStatus();
}

// Characters of valid UTF-8: the bytes that do not continue one.
int64_t CodePoints(const std::string& text) {
  return std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

Json BytesJson(const std::string& token) {
  Json bytes = Json::array();
  for (unsigned char c : token) bytes.push_back(static_cast<int>(c));
  return bytes;
}

Json LogprobsJson(OpenAiEndpoint endpoint, const std::vector<OpenAiTokenLogprobs>* entries, int64_t text_offset) {
  if (entries == nullptr) return nullptr;
  if (endpoint == OpenAiEndpoint::kChatCompletions) {
    Json content = Json::array();
    for (const OpenAiTokenLogprobs& e : *entries) {
      Json top = Json::array();
      for (const OpenAiTopLogprob& t : e.top) {
        top.push_back(Json{{"token", t.token}, {"logprob", t.logprob}, {"bytes", BytesJson(t.bytes)}});
      }
      content.push_back(
          Json{{"token", e.token}, {"logprob", e.logprob}, {"bytes", BytesJson(e.bytes)}, {"top_logprobs", top}});
    }
    return Json{{"content", std::move(content)}};
  }
  Json tokens = Json::array();
  Json token_logprobs = Json::array();
  Json top_logprobs = Json::array();
  Json offsets = Json::array();
  for (const OpenAiTokenLogprobs& e : *entries) {
    tokens.push_back(e.token);
    offsets.push_back(text_offset);
    text_offset += CodePoints(e.token);
    if (!e.scored) {
      token_logprobs.push_back(nullptr);
      top_logprobs.push_back(nullptr);
      continue;
    }
    token_logprobs.push_back(e.logprob);
    // By token text: two tokens spelled alike share a key, the more likely one's value stays.
    Json top = Json::object();
    for (const OpenAiTopLogprob& t : e.top) {
      if (!top.contains(t.token)) top[t.token] = t.logprob;
    }
    if (!top.contains(e.token)) top[e.token] = e.logprob;
    top_logprobs.push_back(std::move(top));
  }
  return Json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top_logprobs)},
              {"text_offset", std::move(offsets)}};
}

}  // namespace

StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body) {
  BF_ASSIGN_OR_RETURN(const Json json, ParseBodyObject(body));
  OpenAiRequest out;
  out.endpoint = endpoint;
  v1::GenerateRequest generate;  // what every choice has in common
  BF_RETURN_IF_ERROR(RefuseUnsupported(endpoint, json));
  const Json* model = Find(json, "model");
  if (model != nullptr) {
    if (!model->is_string()) return FieldError("model", "must be a string");
    generate.set_model(model->get<std::string>());
  }
  bool has_max_tokens = false;
  std::vector<v1::GenerateRequest> prompts(1);
  if (endpoint == OpenAiEndpoint::kCompletions) {
    BF_ASSIGN_OR_RETURN(prompts, ReadPrompts(json));
    BF_ASSIGN_OR_RETURN(std::optional<bool> echo, Bool(json, "echo"));
    out.echo = echo.value_or(false);
    BF_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens, Integer(json, "max_tokens"));
    if (max_tokens == 0) {
      if (!out.echo) return FieldError("max_tokens", "must be at least 1 (0 only with \"echo\": true)");
      out.prompt_only = true;
      generate.set_max_tokens(1);
    } else {
      BF_RETURN_IF_ERROR(ReadMaxTokens(json, "max_tokens", generate, has_max_tokens));
      if (!has_max_tokens) generate.set_max_tokens(16);  // OpenAI's default for completions
    }
  } else {
    BF_RETURN_IF_ERROR(ReadMessages(json, generate));
    BF_RETURN_IF_ERROR(ReadMaxTokens(json, "max_completion_tokens", generate, has_max_tokens));
    if (!has_max_tokens) BF_RETURN_IF_ERROR(ReadMaxTokens(json, "max_tokens", generate, has_max_tokens));
    // Unset: 0, the rest of the context.
  }
  BF_RETURN_IF_ERROR(ReadSampling(json, generate));
  BF_RETURN_IF_ERROR(ReadResponseFormat(json, body, generate));
  // The tools are read from the body again (keeping key order) only when there are some.
  const bool tools = Find(json, "tools") != nullptr || Find(json, "tool_choice") != nullptr;
  if (endpoint == OpenAiEndpoint::kChatCompletions && tools) {
    BF_ASSIGN_OR_RETURN(out.tools, ReadOpenAiTools(body));
    if (out.tools) BF_RETURN_IF_ERROR(ApplyTools(*out.tools, generate));
  }
  BF_RETURN_IF_ERROR(ReadStop(json, generate));
  BF_RETURN_IF_ERROR(ReadLogprobs(endpoint, json, generate));
  if (out.echo && generate.logprobs()) {
    generate.set_prompt_logprobs(true);
    generate.set_logprobs(!out.prompt_only);  // the token of a prompt-only answer is not shown
  }
  BF_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, Bool(json, "ignore_eos"));
  generate.set_ignore_eos(ignore_eos.value_or(false));
  BF_ASSIGN_OR_RETURN(std::optional<bool> stream, Bool(json, "stream"));
  out.stream = stream.value_or(false);
  const Json* options = Find(json, "stream_options");
  if (options != nullptr) {
    if (!out.stream) return FieldError("stream_options", "is only allowed with \"stream\": true");
    if (!options->is_object()) return FieldError("stream_options", "must be an object");
    BF_ASSIGN_OR_RETURN(std::optional<bool> include_usage, Bool(*options, "include_usage"));
    out.include_usage = include_usage.value_or(false);
  }
  BF_ASSIGN_OR_RETURN(out.n, ReadChoices(json, prompts.size()));
  for (const v1::GenerateRequest& prompt : prompts) {
    for (int j = 0; j < out.n; ++j) {
      v1::GenerateRequest& choice = out.choices.emplace_back(generate);
      choice.MergeFrom(prompt);  // the prompt (text or ids); nothing else is set in it
      if (generate.sampling().has_seed()) choice.mutable_sampling()->set_seed(generate.sampling().seed() + j);
    }
  }
  return out;
}

StatusOr<OpenAiTokenizeRequest> ParseOpenAiTokenize(std::string_view body) {
  BF_ASSIGN_OR_RETURN(const Json json, ParseBodyObject(body));
  OpenAiTokenizeRequest out;
  const Json* prompt = Find(json, "prompt");
  const Json* messages = Find(json, "messages");
  if ((prompt == nullptr) == (messages == nullptr)) {
    return absl::InvalidArgumentError("send either 'prompt' (text) or 'messages' (a chat)");
  }
  if (prompt != nullptr) {
    if (!prompt->is_string()) return FieldError("prompt", "must be a string");
    out.prompt = prompt->get<std::string>();
  } else {
    v1::GenerateRequest chat;
    BF_RETURN_IF_ERROR(ReadMessages(json, chat));
    out.chat = chat.chat();
  }
  BF_ASSIGN_OR_RETURN(std::optional<bool> add_special, Bool(json, "add_special_tokens"));
  out.add_special = add_special.value_or(true);
  return out;
}

std::string OpenAiTokenizeBody(const std::vector<int32_t>& tokens, int32_t max_context) {
  return Dump(Json{{"count", tokens.size()}, {"max_model_len", max_context}, {"tokens", tokens}});
}

StatusOr<std::vector<int32_t>> ParseOpenAiDetokenize(std::string_view body) {
  BF_ASSIGN_OR_RETURN(const Json json, ParseBodyObject(body));
  const Json* tokens = Find(json, "tokens");
  if (tokens == nullptr) return FieldError("tokens", "is required");
  return TokenIdArray(*tokens, "tokens", "must be an array of token ids");
}

std::string OpenAiDetokenizeBody(const std::string& text) { return Dump(Json{{"prompt", text}}); }

const char* OpenAiFinishReason(v1::FinishReason reason) {
  return reason == v1::FINISH_REASON_LENGTH ? "length" : "stop";
}

namespace {

// A forced call's answer as `field` ("message" or "delta") of `choice`: tool_calls, no content,
// finish_reason "tool_calls"; left as content when the answer is not whole calls.
void AddToolCalls(const OpenAiResponseHeader& header, const std::string& text, v1::FinishReason finish, int index,
                  Json& choice, const char* field) {
  if (finish != v1::FINISH_REASON_END_OF_SEQUENCE) return;
  const std::optional<std::vector<OpenAiToolCall>> calls = ParseToolCalls(*header.tools, text);
  if (!calls) return;
  choice[field]["content"] = nullptr;
  Json array = Json::array();
  for (size_t k = 0; k < calls->size(); ++k) {
    array.push_back(Json{{"index", k},
                         {"id", ToolCallId(header, index, static_cast<int>(k))},
                         {"type", "function"},
                         {"function", Json{{"name", (*calls)[k].name}, {"arguments", (*calls)[k].arguments}}}});
  }
  choice[field]["tool_calls"] = std::move(array);
  choice["finish_reason"] = "tool_calls";
}

}  // namespace

std::string OpenAiCompletionBody(const OpenAiResponseHeader& header, const std::vector<OpenAiChoice>& choices,
                                 const v1::Usage& usage) {
  const bool chat = header.endpoint == OpenAiEndpoint::kChatCompletions;
  Json array = Json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const OpenAiChoice& c = choices[i];
    Json choice{{"index", i},
                {"logprobs", LogprobsJson(header.endpoint, c.logprobs, 0)},
                {"finish_reason", FinishJson(c.finish)}};
    if (chat) {
      choice["message"] = Json{{"role", "assistant"}, {"content", c.text}};
      if (header.tools != nullptr) AddToolCalls(header, c.text, c.finish, static_cast<int>(i), choice, "message");
    } else {
      choice["text"] = c.text;
    }
    array.push_back(std::move(choice));
  }
  Json body = HeaderJson(header, chat ? "chat.completion" : "text_completion");
  body["choices"] = std::move(array);
  body["usage"] = UsageJson(usage);
  return Dump(body);
}

std::string OpenAiCompletionBody(const OpenAiResponseHeader& header, const std::string& text,
                                 v1::FinishReason finish, const v1::Usage& usage,
                                 const std::vector<OpenAiTokenLogprobs>* logprobs) {
  return OpenAiCompletionBody(header, {OpenAiChoice{text, finish, logprobs}}, usage);
}

std::string OpenAiChunkBody(const OpenAiResponseHeader& header, const std::string& text, v1::FinishReason finish,
                            bool first, const std::vector<OpenAiTokenLogprobs>* logprobs, int64_t text_offset,
                            int index) {
  const bool chat = header.endpoint == OpenAiEndpoint::kChatCompletions;
  Json choice{{"index", index},
              {"logprobs", LogprobsJson(header.endpoint, logprobs, text_offset)},
              {"finish_reason", FinishJson(finish)}};
  if (chat) {
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  Json body = HeaderJson(header, chat ? "chat.completion.chunk" : "text_completion");
  body["choices"] = Json::array({std::move(choice)});
  if (header.include_usage) body["usage"] = nullptr;
  return Dump(body);
}

std::string OpenAiToolCallChunkBody(const OpenAiResponseHeader& header, const std::string& text,
                                    v1::FinishReason finish, int index) {
  Json choice{{"index", index}, {"logprobs", nullptr}, {"finish_reason", FinishJson(finish)}};
  choice["delta"] = Json{{"role", "assistant"}, {"content", text}};
  if (header.tools != nullptr) AddToolCalls(header, text, finish, index, choice, "delta");
  Json body = HeaderJson(header, "chat.completion.chunk");
  body["choices"] = Json::array({std::move(choice)});
  if (header.include_usage) body["usage"] = nullptr;
  return Dump(body);
}

std::string ToolCallId(const OpenAiResponseHeader& header, int index, int call_index) {
  return absl::StrCat("call_", header.id, "_", index, "_", call_index);
}

std::string OpenAiToolCallHeadChunkBody(const OpenAiResponseHeader& header, const std::string& name, int index,
                                        int call_index) {
  Json call{{"index", call_index},
            {"id", ToolCallId(header, index, call_index)},
            {"type", "function"},
            {"function", Json{{"name", name}, {"arguments", ""}}}};
  Json choice{{"index", index}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  choice["delta"] = Json{{"role", "assistant"}, {"content", nullptr}, {"tool_calls", Json::array({std::move(call)})}};
  Json body = HeaderJson(header, "chat.completion.chunk");
  body["choices"] = Json::array({std::move(choice)});
  if (header.include_usage) body["usage"] = nullptr;
  return Dump(body);
}

std::string OpenAiToolCallArgumentsChunkBody(const OpenAiResponseHeader& header, const std::string& arguments,
                                             v1::FinishReason finish, bool complete, int index, int call_index) {
  Json choice{{"index", index}, {"logprobs", nullptr}};
  choice["finish_reason"] =
      finish == v1::FINISH_REASON_UNSPECIFIED ? Json(nullptr) : complete ? Json("tool_calls") : FinishJson(finish);
  choice["delta"] = Json::object();
  if (!arguments.empty()) {
    choice["delta"]["tool_calls"] =
        Json::array({Json{{"index", call_index}, {"function", Json{{"arguments", arguments}}}}});
  }
  Json body = HeaderJson(header, "chat.completion.chunk");
  body["choices"] = Json::array({std::move(choice)});
  if (header.include_usage) body["usage"] = nullptr;
  return Dump(body);
}

int64_t OpenAiLogprobsLength(const std::vector<OpenAiTokenLogprobs>& entries) {
  int64_t n = 0;
  for (const OpenAiTokenLogprobs& e : entries) n += CodePoints(e.token);
  return n;
}

std::string OpenAiUsageChunkBody(const OpenAiResponseHeader& header, const v1::Usage& usage) {
  const bool chat = header.endpoint == OpenAiEndpoint::kChatCompletions;
  Json body = HeaderJson(header, chat ? "chat.completion.chunk" : "text_completion");
  body["choices"] = Json::array();
  body["usage"] = UsageJson(usage);
  return Dump(body);
}

std::string OpenAiErrorBody(const Status& status) {
  const Json body{{"error",
                   {{"message", std::string(status.message())},
                    {"type", HttpErrorOf(status.code()).type},
                    {"param", nullptr},
                    {"code", absl::StatusCodeToString(status.code())}}}};
  return Dump(body);
}

std::string OpenAiModelsBody(const std::string& model, int64_t created, int32_t max_context) {
  const Json body{{"object", "list"},
                  {"data", Json::array({Json{{"id", model},
                                             {"object", "model"},
                                             {"created", created},
                                             {"owned_by", "bitfleet"},
                                             {"max_model_len", max_context}}})}};
  return Dump(body);
}

int HttpStatusOf(absl::StatusCode code) { return HttpErrorOf(code).status; }

}  // namespace bitfleet::coordinator

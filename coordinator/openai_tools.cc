#include "coordinator/openai_tools.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <utility>

#include "coordinator/openai_json.h"
#include "nlohmann/json.hpp"

namespace bitfleet::coordinator {
namespace {

// Ordered: parameters are generated in the order the client lists them.
using Json = nlohmann::ordered_json;

const Json* Find(const Json& object, const char* name) { return FindField(object, name); }

bool ValidName(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-'; });
}

// Prefixes every "$ref": "#..." under `schema` with `base`, so that a function's parameters,
// placed at `base` inside the call's schema, still find their own $defs.
void Rebase(Json& schema, const std::string& base) {
  if (schema.is_object()) {
    for (auto& [key, value] : schema.items()) {
      if (key == "$ref" && value.is_string() && value.get<std::string>().starts_with("#")) {
        value = "#" + base + value.get<std::string>().substr(1);
      } else {
        Rebase(value, base);
      }
    }
  } else if (schema.is_array()) {
    for (Json& item : schema) Rebase(item, base);
  }
}

Status ReadFunction(const Json& tool, size_t index, OpenAiFunction& out) {
  const std::string field = absl::StrCat("tools[", index, "]");
  const Json* type = Find(tool, "type");
  if (type == nullptr || *type != Json("function")) return FieldError(field + ".type", "must be \"function\"");
  const Json* function = Find(tool, "function");
  if (function == nullptr || !function->is_object()) return FieldError(field + ".function", "must be an object");
  const Json* name = Find(*function, "name");
  if (name == nullptr || !name->is_string() || !ValidName(name->get<std::string>())) {
    return FieldError(field + ".function.name", "must be 1 to 64 letters, digits, '_' or '-'");
  }
  out.name = name->get<std::string>();
  const Json* description = Find(*function, "description");
  if (description != nullptr) {
    if (!description->is_string()) return FieldError(field + ".function.description", "must be a string");
    out.description = description->get<std::string>();
  }
  const Json* strict = Find(*function, "strict");
  if (strict != nullptr && !strict->is_boolean()) {
    return FieldError(field + ".function.strict", "must be true or false");
  }
  out.strict = strict != nullptr && strict->get<bool>();
  const Json* parameters = Find(*function, "parameters");
  if (parameters != nullptr && !parameters->is_object()) {
    return FieldError(field + ".function.parameters", "must be a JSON Schema object");
  }
  // No parameters: a function that takes none, called with {}.
  out.parameters = parameters != nullptr ? parameters->dump() : R"({"type":"object","additionalProperties":false})";
  return absl::OkStatus();
}

}  // namespace

StatusOr<std::optional<OpenAiTools>> ReadOpenAiTools(std::string_view body) {
  const Json json = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("the request body is not valid JSON");
  const Json* tools = Find(json, "tools");
  const Json* choice = Find(json, "tool_choice");
  if (tools != nullptr && !tools->is_array()) return FieldError("tools", "must be an array");
  if (tools == nullptr || tools->empty()) {
    if (choice != nullptr && *choice != Json("none")) return FieldError("tool_choice", "needs 'tools'");
    return std::optional<OpenAiTools>();
  }
  OpenAiTools out;
  for (size_t i = 0; i < tools->size(); ++i) {
    OpenAiFunction function;
    BF_RETURN_IF_ERROR(ReadFunction((*tools)[i], i, function));
    for (const OpenAiFunction& other : out.functions) {
      if (other.name == function.name) return FieldError("tools", absl::StrCat("name '", function.name, "' twice"));
    }
    out.functions.push_back(std::move(function));
  }
  const Json* parallel = Find(json, "parallel_tool_calls");
  if (parallel != nullptr && !parallel->is_boolean()) return FieldError("parallel_tool_calls", "must be true or false");
  // Off unless asked for (OpenAI's default is on): in this call format a model not trained for
  // it tends to go on adding calls to the array until max_tokens (SmolLM2-135M did, offered a
  // dozen functions), where one call would have been useful.
  out.parallel = parallel != nullptr && parallel->get<bool>();
  if (choice == nullptr || *choice == Json("auto")) {
    out.automatic = true;
    return std::optional<OpenAiTools>(std::move(out));
  }
  if (*choice == Json("none")) return std::optional<OpenAiTools>();
  if (*choice == Json("required")) return std::optional<OpenAiTools>(std::move(out));
  const Json* named = Find(*choice, "function");
  const Json* name = named != nullptr ? Find(*named, "name") : nullptr;
  if (Find(*choice, "type") == nullptr || *Find(*choice, "type") != Json("function") || name == nullptr ||
      !name->is_string()) {
    return FieldError("tool_choice", "must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                                     "\"function\": {\"name\": ...}}");
  }
  auto it = std::find_if(out.functions.begin(), out.functions.end(),
                         [&](const OpenAiFunction& f) { return f.name == name->get<std::string>(); });
  if (it == out.functions.end()) {
    return FieldError("tool_choice", absl::StrCat("names '", name->get<std::string>(), "', which 'tools' lacks"));
  }
  OpenAiTools one;
  one.functions.push_back(*it);
  one.named = true;  // one call of it: never parallel
  return std::optional<OpenAiTools>(std::move(one));
}

std::string ToolCallSchema(const OpenAiTools& tools) {
  if (tools.named) return tools.functions.front().parameters;
  // {"anyOf": [{"name": const, "arguments": parameters}, ...]}: objects told apart by the name
  // (json_schema.h follows them as one until the name is read). With parallel calls they sit in
  // $defs, and the answer is one of them or an array of them.
  const std::string base = tools.parallel ? "/$defs/call" : "";
  Json alternatives = Json::array();
  for (size_t i = 0; i < tools.functions.size(); ++i) {
    const OpenAiFunction& f = tools.functions[i];
    Json parameters = Json::parse(f.parameters, nullptr, /*allow_exceptions=*/false);
    Rebase(parameters, absl::StrCat(base, "/anyOf/", i, "/properties/arguments"));
    Json call = Json::object();
    call["type"] = "object";
    call["properties"] = Json::object();
    call["properties"]["name"] = Json{{"const", f.name}};
    call["properties"]["arguments"] = std::move(parameters);
    call["required"] = Json::array({"name", "arguments"});
    call["additionalProperties"] = false;
    alternatives.push_back(std::move(call));
  }
  if (!tools.parallel) return Json{{"anyOf", std::move(alternatives)}}.dump();
  Json schema = Json::object();
  schema["anyOf"] = Json::array({Json{{"$ref", "#/$defs/call"}},
                                 Json{{"type", "array"}, {"items", Json{{"$ref", "#/$defs/call"}}}, {"minItems", 1}}});
  schema["$defs"] = Json{{"call", Json{{"anyOf", std::move(alternatives)}}}};
  return schema.dump();
}

std::string ToolsPrompt(const OpenAiTools& tools) {
  constexpr char kCall[] = "a JSON object {\"name\": <function name>, \"arguments\": <its arguments>}";
  constexpr char kSeveral[] = ", or a JSON array of such objects to make several calls at once";
  std::string text;
  if (tools.named) {
    text = absl::StrCat("Call the function ", tools.functions.front().name,
                        ": answer with its arguments as a JSON object.\n\nFunction:\n");
  } else if (tools.automatic) {
    text = absl::StrCat("You may call these functions. To call one, answer with only ", kCall,
                        tools.parallel ? kSeveral : "", "; otherwise answer in text.\n\nFunctions:\n");
  } else {
    text = absl::StrCat(tools.parallel ? "Call one or more of these functions: answer with " :
                                         "Call one of these functions: answer with ",
                        kCall, tools.parallel ? kSeveral : "", ".\n\nFunctions:\n");
  }
  for (const OpenAiFunction& f : tools.functions) {
    Json line = Json::object();
    line["name"] = f.name;
    if (!f.description.empty()) line["description"] = f.description;
    line["parameters"] = Json::parse(f.parameters, nullptr, /*allow_exceptions=*/false);
    text += line.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  }
  return text;
}

bool BeginsToolCall(const OpenAiTools& tools, char first) {
  return first == '{' || (first == '[' && tools.parallel && !tools.named);
}

std::optional<std::vector<OpenAiToolCall>> ParseToolCalls(const OpenAiTools& tools, std::string_view text) {
  const Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return std::nullopt;
  const auto dump = [](const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); };
  if (tools.named) {
    if (!json.is_object()) return std::nullopt;
    return std::vector<OpenAiToolCall>{{tools.functions.front().name, dump(json)}};
  }
  const auto call = [&](const Json& object) -> std::optional<OpenAiToolCall> {
    const Json* name = Find(object, "name");
    const Json* arguments = Find(object, "arguments");
    if (name == nullptr || !name->is_string() || arguments == nullptr) return std::nullopt;
    return OpenAiToolCall{name->get<std::string>(), dump(*arguments)};
  };
  std::vector<OpenAiToolCall> calls;
  if (json.is_array() && tools.parallel) {
    for (const Json& item : json) {
      std::optional<OpenAiToolCall> one = call(item);
      if (!one) return std::nullopt;
      calls.push_back(std::move(*one));
    }
    if (calls.empty()) return std::nullopt;
    return calls;
  }
  std::optional<OpenAiToolCall> one = call(json);
  if (!one) return std::nullopt;
  calls.push_back(std::move(*one));
  return calls;
}

namespace {

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipJsonSpace(std::string_view text, size_t i) {
  while (i < text.size() && IsJsonSpace(text[i])) ++i;
  return i;
}

// Reads `token` at text[i] after whitespace: 1 and i past it, 0 when the text ends first, -1
// when something else is there.
int Expect(std::string_view text, size_t& i, std::string_view token) {
  const size_t at = SkipJsonSpace(text, i);
  const size_t n = std::min(token.size(), text.size() - std::min(at, text.size()));
  if (text.substr(at, n) != token.substr(0, n)) return -1;
  if (n < token.size()) return 0;
  i = at + token.size();
  return 1;
}

// How far a call object's head, {"name": "<name>", "arguments": , has come in text from i.
enum class Head { kMore, kNotACall, kFound };
Head ReadHead(std::string_view text, size_t i, std::string* name, size_t* arguments_begin) {
  const auto tokens = [&](std::initializer_list<std::string_view> list) {
    for (std::string_view token : list) {
      const int got = Expect(text, i, token);
      if (got != 1) return got == 0 ? Head::kMore : Head::kNotACall;
    }
    return Head::kFound;
  };
  if (const Head head = tokens({"{", "\"name\"", ":"}); head != Head::kFound) return head;
  i = SkipJsonSpace(text, i);
  if (i == text.size()) return Head::kMore;
  if (text[i] != '"') return Head::kNotACall;
  size_t close = i + 1;
  while (close < text.size() && text[close] != '"') close += text[close] == '\\' ? 2 : 1;
  if (close >= text.size()) return Head::kMore;
  const Json parsed = Json::parse(text.substr(i, close + 1 - i), nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_string()) return Head::kNotACall;
  i = close + 1;
  if (const Head head = tokens({",", "\"arguments\"", ":"}); head != Head::kFound) return head;
  i = SkipJsonSpace(text, i);
  if (i == text.size()) return Head::kMore;  // the arguments' first byte is not here yet
  *name = parsed.get<std::string>();
  *arguments_begin = i;
  return Head::kFound;
}

}  // namespace

bool ToolCallStream::ScanArguments(std::string_view text) {
  if (scan_ == arguments_begin_ && scan_ < text.size()) {
    const char first = text[scan_];
    if (first != '{' && first != '[' && first != '"') {
      depth_ = -1;  // a scalar: it ends at the first delimiter
    }
  }
  while (scan_ < text.size()) {
    const char c = text[scan_];
    if (depth_ < 0) {
      if (IsJsonSpace(c) || c == ',' || c == '}' || c == ']') return true;
    } else if (in_string_) {
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
        if (depth_ == 0) {
          ++scan_;
          return true;
        }
      }
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if (c == '}' || c == ']') {
      ++scan_;
      if (--depth_ == 0) return true;
      continue;
    }
    ++scan_;
  }
  return false;
}

std::vector<ToolCallStream::Delta> ToolCallStream::Update(std::string_view text, bool finished) {
  std::vector<Delta> out;
  const auto open = [&](std::string name, size_t arguments_begin) {
    out.push_back(Delta{calls_, true, std::move(name), ""});
    ++calls_;
    arguments_begin_ = sent_ = scan_ = arguments_begin;
    depth_ = 0;
    in_string_ = escape_ = false;
    phase_ = Phase::kArguments;
  };
  const auto send = [&](size_t end) {
    if (end > sent_) out.push_back(Delta{calls_ - 1, false, "", std::string(text.substr(sent_, end - sent_))});
    sent_ = std::max(sent_, end);
  };
  for (;;) {
    switch (phase_) {
      case Phase::kStart: {
        const size_t i = SkipJsonSpace(text, pos_);
        if (i == text.size()) return out;
        if (tools_.named) {
          open(tools_.functions.front().name, i);
        } else {
          array_ = text[i] == '[' && tools_.parallel;
          pos_ = array_ ? i + 1 : i;
          phase_ = Phase::kHead;
        }
        break;
      }
      case Phase::kHead: {
        std::string name;
        size_t arguments_begin = 0;
        const Head head = ReadHead(text, pos_, &name, &arguments_begin);
        if (head == Head::kMore) return out;
        if (head == Head::kFound) {
          open(std::move(name), arguments_begin);
        } else {
          phase_ = Phase::kDone;  // not a call's head: the constraint makes that impossible
        }
        break;
      }
      case Phase::kArguments: {
        if (ScanArguments(text)) {
          send(scan_);
          pos_ = scan_;
          phase_ = tools_.named ? Phase::kDone : Phase::kTail;
          break;
        }
        size_t end = text.size();
        if (!finished) {
          while (end > sent_ && IsJsonSpace(text[end - 1])) --end;
        }
        send(end);
        return out;
      }
      case Phase::kTail: {
        size_t i = pos_;
        const int closed = Expect(text, i, "}");
        if (closed != 1) {
          if (closed < 0) phase_ = Phase::kDone;
          if (closed == 0) return out;
          break;
        }
        if (!array_) {
          phase_ = Phase::kDone;
          break;
        }
        size_t after = i;
        if (Expect(text, after, ",") == 1) {
          pos_ = after;
          phase_ = Phase::kHead;
          break;
        }
        const size_t j = SkipJsonSpace(text, i);
        if (j == text.size()) return out;
        phase_ = Phase::kDone;  // ']' or, impossibly, anything else
        break;
      }
      case Phase::kDone:
        return out;
    }
  }
}

std::string ToolCallsAsText(const std::vector<OpenAiToolCall>& calls) {
  Json all = Json::array();
  for (const OpenAiToolCall& call : calls) {
    Json arguments = Json::parse(call.arguments, nullptr, /*allow_exceptions=*/false);
    if (arguments.is_discarded()) arguments = call.arguments;  // not JSON: kept as the string it was
    Json object = Json::object();
    object["name"] = call.name;
    object["arguments"] = std::move(arguments);
    all.push_back(std::move(object));
  }
  const Json& answer = all.size() == 1 ? all[0] : all;
  return answer.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace bitfleet::coordinator

#include "coordinator/openai_tools.h"

#include <algorithm>
#include <cctype>
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
  one.named = true;
  return std::optional<OpenAiTools>(std::move(one));
}

std::string ToolCallSchema(const OpenAiTools& tools) {
  if (tools.named) return tools.functions.front().parameters;
  // {"anyOf": [{"name": const, "arguments": parameters}, ...]}: objects that begin alike, told
  // apart by the name (json_schema.h follows them side by side).
  Json alternatives = Json::array();
  for (size_t i = 0; i < tools.functions.size(); ++i) {
    const OpenAiFunction& f = tools.functions[i];
    Json parameters = Json::parse(f.parameters, nullptr, /*allow_exceptions=*/false);
    Rebase(parameters, absl::StrCat("/anyOf/", i, "/properties/arguments"));
    Json call = Json::object();
    call["type"] = "object";
    call["properties"] = Json::object();
    call["properties"]["name"] = Json{{"const", f.name}};
    call["properties"]["arguments"] = std::move(parameters);
    call["required"] = Json::array({"name", "arguments"});
    call["additionalProperties"] = false;
    alternatives.push_back(std::move(call));
  }
  return Json{{"anyOf", std::move(alternatives)}}.dump();
}

std::string ToolsPrompt(const OpenAiTools& tools) {
  std::string text;
  if (tools.named) {
    text = absl::StrCat("Call the function ", tools.functions.front().name,
                        ": answer with its arguments as a JSON object.\n\nFunction:\n");
  } else if (tools.automatic) {
    text = "You may call one of these functions. To call one, answer with only a JSON object {\"name\": "
           "<function name>, \"arguments\": <its arguments>}; otherwise answer in text.\n\nFunctions:\n";
  } else {
    text = "Call one of these functions: answer with a JSON object {\"name\": <function name>, \"arguments\": "
           "<its arguments>}.\n\nFunctions:\n";
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

std::optional<OpenAiToolCall> ParseToolCall(const OpenAiTools& tools, std::string_view text) {
  const Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return std::nullopt;
  const auto dump = [](const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); };
  if (tools.named) {
    if (!json.is_object()) return std::nullopt;
    return OpenAiToolCall{tools.functions.front().name, dump(json)};
  }
  const Json* name = Find(json, "name");
  const Json* arguments = Find(json, "arguments");
  if (name == nullptr || !name->is_string() || arguments == nullptr) return std::nullopt;
  return OpenAiToolCall{name->get<std::string>(), dump(*arguments)};
}

std::optional<ToolCallHead> FindToolCallHead(const OpenAiTools& tools, std::string_view text) {
  size_t i = 0;
  const auto space = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
  };
  const auto expect = [&](std::string_view s) {
    space();
    if (text.substr(i, s.size()) != s) return false;
    i += s.size();
    return true;
  };
  if (tools.named) {
    space();
    if (i == text.size()) return std::nullopt;
    return ToolCallHead{tools.functions.front().name, i};
  }
  if (!expect("{") || !expect("\"name\"") || !expect(":")) return std::nullopt;
  space();
  if (i == text.size() || text[i] != '"') return std::nullopt;
  size_t close = i + 1;
  while (close < text.size() && text[close] != '"') close += text[close] == '\\' ? 2 : 1;
  if (close >= text.size()) return std::nullopt;
  const Json name = Json::parse(text.substr(i, close + 1 - i), nullptr, /*allow_exceptions=*/false);
  if (!name.is_string()) return std::nullopt;
  i = close + 1;
  if (!expect(",") || !expect("\"arguments\"") || !expect(":")) return std::nullopt;
  space();
  if (i == text.size()) return std::nullopt;
  return ToolCallHead{name.get<std::string>(), i};
}

size_t ToolCallArgumentsEnd(const OpenAiTools& tools, std::string_view text, const ToolCallHead& head,
                            bool finished) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  size_t end = text.size();
  while (end > head.arguments_begin && is_space(text[end - 1])) --end;
  if (tools.named) return end;
  if (finished) {
    if (end > head.arguments_begin && text[end - 1] == '}') --end;  // the call object's
    while (end > head.arguments_begin && is_space(text[end - 1])) --end;
    return end;
  }
  while (end > head.arguments_begin && (is_space(text[end - 1]) || text[end - 1] == '}')) --end;
  return end;
}

std::string ToolCallsAsText(const std::vector<OpenAiToolCall>& calls) {
  std::string text;
  for (const OpenAiToolCall& call : calls) {
    Json arguments = Json::parse(call.arguments, nullptr, /*allow_exceptions=*/false);
    if (arguments.is_discarded()) arguments = call.arguments;  // not JSON: kept as the string it was
    Json line = Json::object();
    line["name"] = call.name;
    line["arguments"] = std::move(arguments);
    if (!text.empty()) text += "\n";
    text += line.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
  return text;
}

}  // namespace bitfleet::coordinator

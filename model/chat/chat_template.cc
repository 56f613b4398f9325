#include "model/chat/chat_template.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "model/chat/jinja_builtins.h"
#include "model/chat/jinja_interpreter.h"
#include "model/chat/jinja_parser.h"

namespace bitfleet::chat {
namespace {

using jinja::Expr;
using jinja::JinjaError;
using jinja::Node;
using jinja::Value;

Value FromJson(const nlohmann::ordered_json& j, int depth) {
  if (depth > jinja::kMaxValueDepth) {
    throw JinjaError{absl::StrCat("template variables nest more than ", jinja::kMaxValueDepth, " deep")};
  }
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      if (j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return Value::Float(j.get<double>());
      return Value::Int(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float:
      return Value::Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::String(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      jinja::ValueList items;
      for (const auto& item : j) items.push_back(FromJson(item, depth + 1));
      return Value::List(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      jinja::ValueDict entries;
      for (const auto& [key, item] : j.items()) entries.emplace_back(key, FromJson(item, depth + 1));
      return Value::Dict(std::move(entries));
    }
    default:
      return Value();
  }
}

// Refuses, at load time, filters and tests outside the subset: Jinja itself refuses unknown ones
// when it compiles a template, so a template using them could never render as its author meant.
void CheckExpr(const Expr* e) {
  if (e == nullptr) return;
  if (e->kind == Expr::Kind::kFilter && !jinja::IsKnownFilter(e->name)) {
    throw JinjaError{absl::StrCat("template line ", e->line, ": the filter '", e->name, "' is not supported")};
  }
  if (e->kind == Expr::Kind::kTest && !jinja::IsKnownTest(e->name)) {
    throw JinjaError{absl::StrCat("template line ", e->line, ": the test '", e->name, "' is not supported")};
  }
  for (const auto& c : e->children) CheckExpr(c.get());
  for (const auto& [key, value] : e->keyword) CheckExpr(value.get());
}

void CheckNodes(const jinja::NodeList& nodes) {
  for (const auto& n : nodes) {
    CheckExpr(n->expr.get());
    CheckExpr(n->filter.get());
    for (const auto& [condition, body] : n->branches) {
      CheckExpr(condition.get());
      CheckNodes(body);
    }
    for (const auto& [param, default_value] : n->params) CheckExpr(default_value.get());
    CheckNodes(n->body);
    CheckNodes(n->else_body);
  }
}

}  // namespace

ChatTemplate::~ChatTemplate() = default;

StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Parse(const std::string& source) {
  auto chat_template = std::unique_ptr<ChatTemplate>(new ChatTemplate());
  try {
    chat_template->program_ = std::make_unique<jinja::NodeList>(jinja::Parse(source));
    CheckNodes(*chat_template->program_);
  } catch (const JinjaError& e) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", e.message));
  }
  return chat_template;
}

StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& variables,
                                           const ChatRenderOptions& options) const {
  if (!variables.is_object()) return absl::InvalidArgumentError("chat template variables must be a JSON object");
  jinja::RenderLimits limits;
  limits.max_output_bytes = options.max_output_bytes;
  limits.max_steps = options.max_steps;
  try {
    jinja::ValueDict globals = {
        {"add_generation_prompt", Value::Bool(options.add_generation_prompt)},
        {"bos_token", Value::String(options.bos_token)},
        {"eos_token", Value::String(options.eos_token)},
    };
    for (const auto& [key, item] : variables.items()) {
      Value value = FromJson(item, 0);
      bool replaced = false;
      for (auto& [name, existing] : globals) {
        if (name == key) {
          existing = value;
          replaced = true;
        }
      }
      if (!replaced) globals.emplace_back(key, std::move(value));
    }
    return jinja::Render(*program_, globals, limits);
  } catch (const JinjaError& e) {
    if (e.raised) {
      return absl::InvalidArgumentError(absl::StrCat("the chat template refused the conversation: ", e.message));
    }
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", e.message));
  }
}

}  // namespace bitfleet::chat

#include "model/chat/jinja_interpreter.h"

#include <algorithm>
#include <ctime>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/chat/jinja_builtins.h"

namespace bitfleet::chat::jinja {
namespace {

// Jinja's sandbox refuses ranges longer than this.
constexpr int64_t kMaxRange = 100'000;

Value RangeFunction(const CallArgs& args) {
  if (!args.keyword.empty() || args.positional.empty() || args.positional.size() > 3) {
    Fail("range() takes 1 to 3 positional arguments");
  }
  for (const Value& v : args.positional) {
    if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) Fail("range() takes integers");
  }
  const auto& p = args.positional;
  const int64_t start = p.size() == 1 ? 0 : p[0].integer();
  const int64_t stop = p.size() == 1 ? p[0].integer() : p[1].integer();
  const int64_t step = p.size() == 3 ? p[2].integer() : 1;
  if (step == 0) Fail("range() arg 3 must not be zero");
  ValueList items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (static_cast<int64_t>(items.size()) >= kMaxRange) Fail("range too big (more than 100000 items)");
    items.push_back(Value::Int(i));
    if ((step > 0 && i > std::numeric_limits<int64_t>::max() - step) ||
        (step < 0 && i < std::numeric_limits<int64_t>::min() - step)) {
      break;
    }
  }
  return Value::List(std::move(items));
}

Value NamespaceFunction(const CallArgs& args) {
  ValueDict entries;
  for (const Value& v : args.positional) {
    if (!v.is_dict()) Fail("namespace() takes a dict or keyword arguments");
    entries.insert(entries.end(), v.dict().begin(), v.dict().end());
  }
  for (const auto& [k, v] : args.keyword) entries.emplace_back(k, v);
  return Value::Namespace(std::move(entries));
}

Value DictFunction(const CallArgs& args) {
  if (!args.positional.empty()) Fail("dict() takes keyword arguments only here");
  ValueDict entries(args.keyword.begin(), args.keyword.end());
  return Value::Dict(std::move(entries));
}

Value RaiseException(const CallArgs& args) {
  const Value* message = args.Get(0, "message");
  JinjaError error{message != nullptr ? message->Str() : "raise_exception() called"};
  error.raised = true;
  throw error;
}

Value StrftimeNow(const CallArgs& args) {
  const Value* format = args.Get(0, "format");
  if (format == nullptr || !format->is_string()) Fail("strftime_now() takes a format string");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[256];
  const size_t n = std::strftime(buf, sizeof(buf), format->string().c_str(), &local);
  return Value::String(std::string(buf, n));
}

class Interpreter {
 public:
  explicit Interpreter(const RenderLimits& limits) : limits_(limits) {}
  // `{% set ns.x = ns %}` (or through a list or another namespace) makes a cycle of shared
  // pointers that would outlive the render: empty every namespace assigned to. No value of the
  // render escapes it (the result is text), so none is observed half-empty.
  ~Interpreter() {
    for (const Value& ns : assigned_namespaces_) ns.DropAttributes();
  }

  std::string Run(const NodeList& program, const ValueDict& variables) {
    SetStringLimit(limits_.max_output_bytes);
    frames_.emplace_back();
    Frame& globals = frames_.back();
    globals["range"] = Value::Function("range", RangeFunction);
    globals["namespace"] = Value::Function("namespace", NamespaceFunction);
    globals["dict"] = Value::Function("dict", DictFunction);
    globals["raise_exception"] = Value::Function("raise_exception", RaiseException);
    globals["strftime_now"] = Value::Function("strftime_now", StrftimeNow);
    for (const auto& [name, value] : variables) globals[name] = value;
    std::string out;
    out_ = &out;
    const Flow flow = Exec(program);
    if (flow != Flow::kNormal) Fail("'break' or 'continue' outside a loop");
    return out;
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Frame = absl::flat_hash_map<std::string, Value>;

  void Step() {
    if (++steps_ > limits_.max_steps) {
      Fail(absl::StrCat("the template ran more than ", limits_.max_steps, " steps (the render's limit)"));
    }
  }

  void Append(std::string_view text) {
    if (out_->size() + text.size() > limits_.max_output_bytes) {
      Fail(absl::StrCat("the rendered text exceeds ", limits_.max_output_bytes, " bytes (the render's limit)"));
    }
    out_->append(text);
  }

  Value Lookup(const std::string& name) const {
    for (size_t i = frames_.size(); i-- > scope_floor_;) {
      auto it = frames_[i].find(name);
      if (it != frames_[i].end()) return it->second;
    }
    auto it = frames_[0].find(name);
    return it != frames_[0].end() ? it->second : Value();
  }

  // Renders `body` into a string of its own (macro bodies and `{% set x %}` blocks).
  std::string Capture(const NodeList& body) {
    std::string captured;
    std::string* saved = out_;
    out_ = &captured;
    const Flow flow = Exec(body);
    out_ = saved;
    if (flow != Flow::kNormal) Fail("'break' or 'continue' outside a loop");
    return captured;
  }

  void Assign(const std::vector<std::string>& targets, const Value& value) {
    Frame& frame = frames_.back();
    if (targets.size() == 1) {
      frame[targets[0]] = value;
      return;
    }
    if (!value.is_list() || value.list().size() != targets.size()) {
      Fail(absl::StrCat("cannot unpack ", value.TypeName(), " into ", targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) frame[targets[i]] = value.list()[i];
  }

  Flow Exec(const NodeList& nodes) {
    for (const NodePtr& node : nodes) {
      Flow flow;
      try {
        flow = ExecNode(*node);
      } catch (JinjaError& e) {
        if (!absl::StartsWith(e.message, "template line ")) {
          e.message = absl::StrCat("template line ", node->line, ": ", e.message);
        }
        throw;
      }
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Flow ExecNode(const Node& node) {
    Step();
    switch (node.kind) {
      case Node::Kind::kText:
        Append(node.text);
        return Flow::kNormal;
      case Node::Kind::kOutput:
        Append(Eval(*node.expr).Str());
        return Flow::kNormal;
      case Node::Kind::kIf:
        for (const auto& [condition, body] : node.branches) {
          if (condition == nullptr || Eval(*condition).Truthy()) return Exec(body);
        }
        return Flow::kNormal;
      case Node::Kind::kFor:
        ExecFor(node);
        return Flow::kNormal;
      case Node::Kind::kSet: {
        Value value = Eval(*node.expr);
        if (!node.attribute.empty()) {
          const Value target = Lookup(node.targets[0]);
          target.SetAttribute(node.attribute, std::move(value));
          const bool known = std::any_of(assigned_namespaces_.begin(), assigned_namespaces_.end(),
                                         [&](const Value& ns) { return ns.SameObject(target); });
          if (!known) assigned_namespaces_.push_back(target);
        } else {
          Assign(node.targets, value);
        }
        return Flow::kNormal;
      }
      case Node::Kind::kSetBlock:
        Assign(node.targets, Value::String(Capture(node.body)));
        return Flow::kNormal;
      case Node::Kind::kMacro:
        frames_.back()[node.name] = Value::Function(
            node.name, [this, &node](const CallArgs& args) { return CallMacro(node, args); });
        return Flow::kNormal;
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
      case Node::Kind::kBlock: {  // a call block in Jinja: its own scope
        frames_.emplace_back();
        const Flow flow = Exec(node.body);
        frames_.pop_back();
        return flow;
      }
    }
    return Flow::kNormal;
  }

  void ExecFor(const Node& node) {
    ValueList items = Iterate(Eval(*node.expr));
    if (node.filter != nullptr) {  // `for x in y if cond`: loop indices count the kept items
      ValueList kept;
      for (const Value& item : items) {
        Step();
        frames_.emplace_back();
        Assign(node.targets, item);
        const bool keep = Eval(*node.filter).Truthy();
        frames_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    // Jinja runs the else block also when no iteration reached the end of the body (each one
    // ended in continue, or the first in break).
    bool completed = false;
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Step();
      frames_.emplace_back();
      Assign(node.targets, items[static_cast<size_t>(i)]);
      ValueDict loop = {
          {"index", Value::Int(i + 1)},       {"index0", Value::Int(i)},
          {"revindex", Value::Int(n - i)},    {"revindex0", Value::Int(n - i - 1)},
          {"first", Value::Bool(i == 0)},     {"last", Value::Bool(i == n - 1)},
          {"length", Value::Int(n)},
      };
      if (i > 0) loop.emplace_back("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.emplace_back("nextitem", items[static_cast<size_t>(i + 1)]);
      loop.emplace_back("cycle", Value::Function("loop.cycle", [i](const CallArgs& args) {
                          if (args.positional.empty()) Fail("loop.cycle() needs at least one argument");
                          return args.positional[static_cast<size_t>(i) % args.positional.size()];
                        }));
      frames_.back()["loop"] = Value::Dict(std::move(loop));
      const Flow flow = Exec(node.body);
      frames_.pop_back();
      if (flow == Flow::kBreak) break;
      completed = completed || flow == Flow::kNormal;
    }
    if (!completed) Exec(node.else_body);
  }

  Value CallMacro(const Node& macro, const CallArgs& args) {
    if (call_depth_ >= limits_.max_call_depth) {
      Fail(absl::StrCat("macros nest more than ", limits_.max_call_depth, " calls deep"));
    }
    if (args.positional.size() > macro.params.size()) {
      Fail(absl::StrCat("macro '", macro.name, "' takes ", macro.params.size(), " arguments, got ",
                        args.positional.size()));
    }
    // The macro sees its parameters and the template's globals, not the caller's locals.
    Frame frame;
    for (size_t i = 0; i < macro.params.size(); ++i) {
      const auto& [param, default_value] = macro.params[i];
      const Value* given = args.Get(i, param);
      frame[param] = given != nullptr ? *given : default_value != nullptr ? Eval(*default_value) : Value();
    }
    for (const auto& [key, value] : args.keyword) {
      bool known = false;
      for (const auto& param : macro.params) known = known || param.first == key;
      if (!known) Fail(absl::StrCat("macro '", macro.name, "' takes no keyword argument '", key, "'"));
    }
    const size_t saved_floor = scope_floor_;
    frames_.push_back(std::move(frame));
    scope_floor_ = frames_.size() - 1;
    ++call_depth_;
    std::string text;
    try {
      text = Capture(macro.body);
    } catch (...) {
      --call_depth_;
      scope_floor_ = saved_floor;
      frames_.pop_back();
      throw;
    }
    --call_depth_;
    scope_floor_ = saved_floor;
    frames_.pop_back();
    return Value::String(std::move(text));
  }

  CallArgs EvalArgs(const Expr& e, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.children.size(); ++i) args.positional.push_back(Eval(*e.children[i]));
    for (const auto& [key, value] : e.keyword) args.keyword.emplace_back(key, Eval(*value));
    return args;
  }

  Value Eval(const Expr& e) {
    Step();
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        ValueList items;
        for (const ExprPtr& c : e.children) items.push_back(Eval(*c));
        return Value::List(std::move(items), e.kind == Expr::Kind::kTuple);
      }
      case Expr::Kind::kDict: {
        ValueDict entries;
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          Value key = Eval(*e.children[i]);
          if (!key.is_string()) Fail("dict keys must be strings in chat templates");
          Value value = Eval(*e.children[i + 1]);
          bool replaced = false;
          for (auto& [k, v] : entries) {
            if (k == key.string()) {
              v = value;
              replaced = true;
            }
          }
          if (!replaced) entries.emplace_back(key.string(), std::move(value));
        }
        return Value::Dict(std::move(entries));
      }
      case Expr::Kind::kGetAttr:
        return GetAttribute(Eval(*e.children[0]), e.name);
      case Expr::Kind::kGetItem: {
        Value object = Eval(*e.children[0]);
        return GetItem(object, Eval(*e.children[1]));
      }
      case Expr::Kind::kSlice: {
        Value object = Eval(*e.children[0]);
        Value parts[3];
        for (size_t i = 0; i < 3; ++i) {
          if (e.children[i + 1] != nullptr) parts[i] = Eval(*e.children[i + 1]);
        }
        return Slice(object, parts[0], parts[1], parts[2]);
      }
      case Expr::Kind::kCall: {
        Value callee = Eval(*e.children[0]);
        if (callee.kind() != Value::Kind::kCallable) {
          Fail(callee.is_undefined() ? "called an undefined value (no such function or method)"
                                     : absl::StrCat("'", callee.TypeName(), "' object is not callable"));
        }
        return callee.Call(EvalArgs(e, 1));
      }
      case Expr::Kind::kFilter: {
        Value value = Eval(*e.children[0]);
        return ApplyFilter(e.name, value, EvalArgs(e, 1));
      }
      case Expr::Kind::kTest: {
        Value value = Eval(*e.children[0]);
        return Value::Bool(ApplyTest(e.name, value, EvalArgs(e, 1)) != e.negated);
      }
      case Expr::Kind::kNegate: {
        Value v = Eval(*e.children[0]);
        if (!v.is_number()) Fail(absl::StrCat("bad operand type for unary ", e.name, ": '", v.TypeName(), "'"));
        if (e.name == "+") return v.kind() == Value::Kind::kFloat ? v : Value::Int(v.integer());
        if (v.kind() == Value::Kind::kFloat) return Value::Float(-v.number());
        if (v.integer() == std::numeric_limits<int64_t>::min()) Fail("integer overflow (beyond 64 bits)");
        return Value::Int(-v.integer());
      }
      case Expr::Kind::kNot:
        return Value::Bool(!Eval(*e.children[0]).Truthy());
      case Expr::Kind::kBinary: {
        Value a = Eval(*e.children[0]);
        return BinaryOp(e.name, a, Eval(*e.children[1]));
      }
      case Expr::Kind::kCompare: {
        Value left = Eval(*e.children[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = Eval(*e.children[i + 1]);
          const std::string& op = e.ops[i];
          bool holds;
          if (op == "==") {
            holds = Equal(left, right);
          } else if (op == "!=") {
            holds = !Equal(left, right);
          } else if (op == "<") {
            holds = Less(left, right);
          } else if (op == "<=") {
            holds = Less(left, right) || Equal(left, right);
          } else if (op == ">") {
            holds = Less(right, left);
          } else if (op == ">=") {
            holds = Less(right, left) || Equal(left, right);
          } else {
            holds = Contains(right, left) == (op == "in");
          }
          if (!holds) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case Expr::Kind::kAnd: {
        Value left = Eval(*e.children[0]);
        return left.Truthy() ? Eval(*e.children[1]) : left;
      }
      case Expr::Kind::kOr: {
        Value left = Eval(*e.children[0]);
        return left.Truthy() ? left : Eval(*e.children[1]);
      }
      case Expr::Kind::kConditional:
        if (Eval(*e.children[0]).Truthy()) return Eval(*e.children[1]);
        return e.children[2] != nullptr ? Eval(*e.children[2]) : Value();
    }
    return Value();
  }

  const RenderLimits limits_;
  std::vector<Frame> frames_;  // [0]: globals and the template's top level
  size_t scope_floor_ = 0;     // lookups see frames_[scope_floor_..] and frames_[0] (macros)
  std::string* out_ = nullptr;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  std::vector<Value> assigned_namespaces_;  // each once, emptied by the destructor
};

}  // namespace

std::string Render(const NodeList& program, const ValueDict& variables, const RenderLimits& limits) {
  return Interpreter(limits).Run(program, variables);
}

}  // namespace bitfleet::chat::jinja

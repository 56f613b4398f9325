// Values of the Jinja subset that chat templates are written in (docs/chat-templates.md). They
// follow Python's semantics where a template can observe them: truthiness, equality across int /
// float / bool, str() and repr() as the printed text, and Jinja's Undefined (what a missing
// variable, key or index gives: prints as "", is false, iterates as nothing, and raises when
// anything else is asked of it).
//
// Lists and dicts are immutable and shared (the sandbox Hugging Face renders with forbids
// mutating them); a namespace is the one mutable object (`{% set ns.x = ... %}`). Dict keys are
// strings, kept in insertion order as Python's are.
//
// Internal to model/chat: errors are thrown as JinjaError and turned into Status by
// ChatTemplate (chat_template.h), which is the library's API.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bitfleet::chat::jinja {

// A template error: a malformed template, an operation Python would refuse, or raise_exception.
struct JinjaError {
  std::string message;
  bool raised = false;  // by the template's raise_exception(message)
};

// Throws JinjaError{message}.
[[noreturn]] inline void Fail(std::string message) { throw JinjaError{std::move(message)}; }

class Value;
using ValueList = std::vector<Value>;
using ValueDict = std::vector<std::pair<std::string, Value>>;

// Positional and keyword arguments of a call (a filter, test, method, global or macro).
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index` or named `name`; nullptr when neither was given.
  const Value* Get(size_t index, std::string_view name) const;
  // The keyword argument `name`; nullptr when not given.
  const Value* Keyword(std::string_view name) const;
};

using Callable = std::function<Value(const CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable };

  Value() = default;  // Undefined
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  static Value List(ValueList items, bool tuple = false);
  static Value Dict(ValueDict entries);
  static Value Namespace(ValueDict entries);
  static Value Function(std::string name, Callable call);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }

  bool boolean() const { return bool_; }
  int64_t integer() const { return kind_ == Kind::kBool ? (bool_ ? 1 : 0) : int_; }
  double number() const;  // int, bool or float as a double
  const std::string& string() const { return *string_; }
  const ValueList& list() const { return *list_; }
  const ValueDict& dict() const;  // a dict's or namespace's entries
  const std::string& function_name() const { return *string_; }
  Value Call(const CallArgs& args) const { return (*callable_)(args); }

  // A dict's or namespace's value for `key`; nullptr when absent.
  const Value* Find(std::string_view key) const;
  // Sets a namespace attribute (namespaces are shared: every copy sees it).
  void SetAttribute(const std::string& key, Value value) const;
  // Removes every attribute of a namespace (nothing for other kinds). An attribute may hold the
  // namespace itself, directly or through lists and other namespaces: a reference cycle that
  // only this breaks (the interpreter does, for the namespaces it assigned to, after a render).
  void DropAttributes() const;

  bool Truthy() const;
  // Python's str(): strings as they are, True / None, reprs inside containers; Undefined → "".
  std::string Str() const;
  // Python's repr().
  std::string Repr() const;
  // Namespaces and functions: whether both are the same object (Python's `is`).
  bool SameObject(const Value& other) const {
    return kind_ == other.kind_ && dict_ == other.dict_ && callable_ == other.callable_;
  }
  // Python's type name, for error messages ("str", "list", "NoneType", "undefined", ...).
  const char* TypeName() const;

 private:
  void AppendRepr(int depth, std::string* out) const;

  Kind kind_ = Kind::kUndefined;
  bool bool_ = false;
  bool tuple_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::shared_ptr<const std::string> string_;  // a string, or a function's name
  std::shared_ptr<const ValueList> list_;
  std::shared_ptr<ValueDict> dict_;  // mutable only through SetAttribute, for namespaces
  std::shared_ptr<const Callable> callable_;
};

// Refuses strings longer than the render's output limit (set per render and thread; 0: none), so
// that a template cannot build unbounded text off the output path ('x' * 10**9, repeated joins,
// the repr or JSON of a huge list).
void SetStringLimit(size_t max_bytes);
void CheckStringSize(size_t bytes);

// Values nest at most this deep where they are walked (printing, JSON, comparison, conversion
// from a request's JSON): a namespace can hold itself, and request JSON can nest deeply.
inline constexpr int kMaxValueDepth = 64;

// Python's ==, including 1 == 1.0 == True and deep equality of containers; Undefined equals
// only Undefined; namespaces and functions equal only themselves.
bool Equal(const Value& a, const Value& b);
// Python's <: numbers, strings (by code point), lists and tuples lexicographically; raises for
// anything else.
bool Less(const Value& a, const Value& b);

// Python's repr() of a float (shortest round-trip digits; exponent form below 1e-4 and from
// 1e16) and of a string (quotes chosen as Python does, control characters escaped).
std::string FloatRepr(double d);
std::string StringRepr(std::string_view s);

// json.dumps's options, as Hugging Face's `tojson` filter passes them (its defaults here).
struct JsonFormat {
  int indent = -1;             // < 0: one line
  std::string item_separator;  // "": Python's default (", " on one line, "," indented)
  std::string key_separator;   // "": ": "
  bool sort_keys = false;
  bool ensure_ascii = false;  // true: non-ASCII as \uXXXX escapes (surrogate pairs past U+FFFF)
};
std::string ToJson(const Value& value, const JsonFormat& format = {});

}  // namespace bitfleet::chat::jinja

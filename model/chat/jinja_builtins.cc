#include "model/chat/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/chat/jinja_strings.h"

namespace bitfleet::chat::jinja {
namespace {

// ---- argument helpers ----

const Value& Arg(const CallArgs& args, size_t index, std::string_view name, std::string_view what) {
  const Value* v = args.Get(index, name);
  if (v == nullptr) Fail(absl::StrCat(std::string(what), " needs the argument '", std::string(name), "'"));
  return *v;
}

const Value* OptionalArg(const CallArgs& args, size_t index, std::string_view name) {
  const Value* v = args.Get(index, name);
  return v == nullptr || v->is_undefined() ? nullptr : v;
}

int64_t IntArg(const Value* v, int64_t fallback) {
  if (v == nullptr || v->is_none()) return fallback;
  if (v->kind() != Value::Kind::kInt && v->kind() != Value::Kind::kBool) {
    Fail(absl::StrCat("expected an integer argument, got ", v->TypeName()));
  }
  return v->integer();
}

std::string StringArg(const Value& v, std::string_view what) {
  if (!v.is_string()) Fail(absl::StrCat(std::string(what), " must be a string, got ", v.TypeName()));
  return v.string();
}

Value Method(std::string name, Callable call) { return Value::Function(std::move(name), std::move(call)); }

Value StringMethod(const std::string& s, const std::string& name) {
  const std::string full = absl::StrCat("str.", std::string(name));
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return Method(full, [s, name](const CallArgs& a) {
      return Value::String(PyStrip(s, OptionalArg(a, 0, "chars"), name != "rstrip", name != "lstrip"));
    });
  }
  if (name == "split") {
    return Method(full, [s](const CallArgs& a) {
      return PySplit(s, OptionalArg(a, 0, "sep"), IntArg(OptionalArg(a, 1, "maxsplit"), -1));
    });
  }
  if (name == "startswith" || name == "endswith") {
    return Method(full, [s, name](const CallArgs& a) {
      return Value::Bool(StartsOrEnds(s, Arg(a, 0, "prefix", name), name == "startswith"));
    });
  }
  if (name == "upper" || name == "lower") {
    return Method(full, [s, name](const CallArgs&) { return Value::String(MapCase(s, name == "upper")); });
  }
  if (name == "title") return Method(full, [s](const CallArgs&) { return Value::String(PyTitle(s)); });
  if (name == "capitalize") return Method(full, [s](const CallArgs&) { return Value::String(PyCapitalize(s)); });
  if (name == "replace") {
    return Method(full, [s](const CallArgs& a) {
      return Value::String(PyReplace(s, StringArg(Arg(a, 0, "old", "replace"), "old"),
                                     StringArg(Arg(a, 1, "new", "replace"), "new"),
                                     IntArg(OptionalArg(a, 2, "count"), -1)));
    });
  }
  if (name == "find") {
    return Method(full, [s](const CallArgs& a) {
      const std::string needle = StringArg(Arg(a, 0, "sub", "find"), "sub");
      const size_t at = s.find(needle);
      if (at == std::string::npos) return Value::Int(-1);
      return Value::Int(static_cast<int64_t>(Characters(std::string_view(s).substr(0, at)).size()));
    });
  }
  if (name == "join") {
    return Method(full, [s](const CallArgs& a) {
      std::string out;
      bool first = true;
      for (const Value& v : Iterate(Arg(a, 0, "iterable", "join"))) {
        if (!first) out += s;
        first = false;
        out += StringArg(v, "join's items");
        CheckStringSize(out.size());
      }
      return Value::String(std::move(out));
    });
  }
  return Value();
}

Value DictMethod(const Value& dict, const std::string& name) {
  const std::string full = absl::StrCat("dict.", std::string(name));
  if (name == "items") {
    return Method(full, [dict](const CallArgs&) {
      ValueList items;
      for (const auto& [k, v] : dict.dict()) items.push_back(Value::List({Value::String(k), v}, true));
      return Value::List(std::move(items));
    });
  }
  if (name == "keys" || name == "values") {
    return Method(full, [dict, name](const CallArgs&) {
      ValueList items;
      for (const auto& [k, v] : dict.dict()) items.push_back(name == "keys" ? Value::String(k) : v);
      return Value::List(std::move(items));
    });
  }
  if (name == "get") {
    return Method(full, [dict](const CallArgs& a) {
      const Value& key = Arg(a, 0, "key", "get");
      const Value* found = key.is_string() ? dict.Find(key.string()) : nullptr;
      if (found != nullptr) return *found;
      const Value* fallback = a.Get(1, "default");
      return fallback != nullptr ? *fallback : Value::None();
    });
  }
  return Value();
}

// Python index normalization; nullopt-like -1 when out of range.
int64_t NormalizeIndex(int64_t index, size_t size) {
  if (index < 0) index += static_cast<int64_t>(size);
  return index >= 0 && index < static_cast<int64_t>(size) ? index : -1;
}

[[noreturn]] void Overflow() { Fail("integer overflow (beyond 64 bits)"); }

int64_t CheckedAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) Overflow();
  return r;
}
int64_t CheckedSub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) Overflow();
  return r;
}
int64_t CheckedMul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) Overflow();
  return r;
}

bool IsInt(const Value& v) { return v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kBool; }

Value Repeat(const Value& seq, int64_t times) {
  times = std::max<int64_t>(times, 0);
  if (seq.is_string()) {
    CheckStringSize(seq.string().size() * static_cast<size_t>(std::min<int64_t>(times, 1 << 30)));
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.string();
    return Value::String(std::move(out));
  }
  CheckStringSize(seq.list().size() * static_cast<size_t>(std::min<int64_t>(times, 1 << 30)));
  ValueList out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
  return Value::List(std::move(out), seq.is_tuple());
}

double FloorMod(double a, double b) {
  const double m = std::fmod(a, b);
  return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m;
}

[[noreturn]] void Unsupported(std::string_view op, const Value& a, const Value& b) {
  Fail(absl::StrCat("unsupported operand type(s) for ", std::string(op), ": '", a.TypeName(), "' and '",
                    b.TypeName(), "'"));
}

// ---- filters ----

Value Attribute(const Value& item, const std::string& path) {
  Value v = item;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (v.is_undefined()) return v;
    v = GetAttribute(v, std::string(part));
  }
  return v;
}

// selectattr / rejectattr / select / reject.
Value SelectFilter(const Value& seq, const CallArgs& args, bool by_attribute, bool keep) {
  std::string attribute;
  size_t next = 0;
  if (by_attribute) attribute = StringArg(Arg(args, next++, "attribute", "selectattr"), "attribute");
  CallArgs test_args;
  std::string test;
  if (next < args.positional.size()) {
    test = StringArg(args.positional[next++], "the test name");
    test_args.positional.assign(args.positional.begin() + static_cast<ptrdiff_t>(next), args.positional.end());
  }
  ValueList out;
  for (const Value& item : Iterate(seq)) {
    const Value subject = by_attribute ? Attribute(item, attribute) : item;
    const bool pass = test.empty() ? subject.Truthy() : ApplyTest(test, subject, test_args);
    if (pass == keep) out.push_back(item);
  }
  return Value::List(std::move(out));
}

Value MapFilter(const Value& seq, const CallArgs& args) {
  ValueList out;
  const Value* attribute = args.Keyword("attribute");
  if (attribute != nullptr) {
    const std::string path = StringArg(*attribute, "attribute");
    const Value* fallback = args.Keyword("default");
    for (const Value& item : Iterate(seq)) {
      Value v = Attribute(item, path);
      out.push_back(v.is_undefined() && fallback != nullptr ? *fallback : v);
    }
    return Value::List(std::move(out));
  }
  const std::string filter = StringArg(Arg(args, 0, "filter", "map"), "the filter name");
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : Iterate(seq)) out.push_back(ApplyFilter(filter, item, rest));
  return Value::List(std::move(out));
}

std::string IndentFilter(const std::string& s, const CallArgs& args) {
  const Value* width = OptionalArg(args, 0, "width");
  std::string pad = width != nullptr && width->is_string() ? width->string() : std::string(IntArg(width, 4), ' ');
  const Value* first = OptionalArg(args, 1, "first");
  const Value* blank = OptionalArg(args, 2, "blank");
  std::vector<std::string> lines;
  std::string text = s + "\n";  // as Jinja does, so that a trailing newline ends a line
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find_first_of("\r\n", start);
    lines.push_back(text.substr(start, end - start));
    start = end + ((text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n') ? 2 : 1);
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    const bool indent = i > 0 && (!lines[i].empty() || (blank != nullptr && blank->Truthy()));
    out += indent ? pad + lines[i] : lines[i];
  }
  if (first != nullptr && first->Truthy()) out = pad + out;
  return out;
}

Value IntFilter(const Value& v, const CallArgs& args) {
  const Value* fallback = OptionalArg(args, 0, "default");
  const Value result_default = fallback != nullptr ? *fallback : Value::Int(0);
  if (IsInt(v)) return Value::Int(v.integer());
  if (v.kind() == Value::Kind::kFloat) {
    if (!std::isfinite(v.number()) || std::fabs(v.number()) > 9.2e18) return result_default;
    return Value::Int(static_cast<int64_t>(v.number()));
  }
  if (v.is_string()) {
    const std::string t = PyStrip(v.string(), nullptr, true, true);
    char* end = nullptr;
    errno = 0;
    const long long i = std::strtoll(t.c_str(), &end, 10);
    if (!t.empty() && end == t.c_str() + t.size() && errno == 0) return Value::Int(i);
    const double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && end == t.c_str() + t.size() && std::isfinite(d)) return Value::Int(static_cast<int64_t>(d));
  }
  return result_default;
}

Value FloatFilter(const Value& v, const CallArgs& args) {
  const Value* fallback = OptionalArg(args, 0, "default");
  const Value result_default = fallback != nullptr ? *fallback : Value::Float(0);
  if (v.is_number()) return Value::Float(v.number());
  if (v.is_string()) {
    const std::string t = PyStrip(v.string(), nullptr, true, true);
    char* end = nullptr;
    const double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && end == t.c_str() + t.size()) return Value::Float(d);
  }
  return result_default;
}

// Jinja's sort key: the item (or its `attribute`), strings lower-cased unless case-sensitive.
Value SortKey(const Value& item, const Value* attribute, bool case_sensitive) {
  Value key = attribute != nullptr ? Attribute(item, attribute->Str()) : item;
  if (!case_sensitive && key.is_string()) return Value::String(MapCase(key.string(), false));
  return key;
}

bool FlagArg(const CallArgs& args, size_t index, std::string_view name) {
  const Value* v = OptionalArg(args, index, name);
  return v != nullptr && v->Truthy();
}

// `items` ordered by `key` of each, stable as Python's sorted() (reversed: still stable).
Value SortedBy(const ValueList& items, const std::function<Value(const Value&)>& key, bool reverse) {
  std::vector<std::pair<Value, size_t>> keyed;
  for (size_t i = 0; i < items.size(); ++i) keyed.emplace_back(key(items[i]), i);
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& a, const auto& b) {
    return reverse ? Less(b.first, a.first) : Less(a.first, b.first);
  });
  ValueList out;
  for (const auto& [k, i] : keyed) out.push_back(items[i]);
  return Value::List(std::move(out));
}

// sort(reverse, case_sensitive, attribute).
Value SortFilter(const Value& seq, const CallArgs& args) {
  const bool reverse = FlagArg(args, 0, "reverse");
  const bool case_sensitive = FlagArg(args, 1, "case_sensitive");
  const Value* attribute = OptionalArg(args, 2, "attribute");
  return SortedBy(
      Iterate(seq), [&](const Value& item) { return SortKey(item, attribute, case_sensitive); }, reverse);
}

// dictsort(case_sensitive, by='key', reverse): the (key, value) pairs, sorted.
Value DictSortFilter(const Value& dict, const CallArgs& args) {
  if (!dict.is_dict()) Fail(absl::StrCat("dictsort needs a mapping, got ", dict.TypeName()));
  const bool case_sensitive = FlagArg(args, 0, "case_sensitive");
  const Value* by = OptionalArg(args, 1, "by");
  const bool by_value = by != nullptr && by->Str() == "value";
  if (by != nullptr && !by_value && by->Str() != "key") Fail("dictsort's 'by' must be 'key' or 'value'");
  const bool reverse = FlagArg(args, 2, "reverse");
  ValueList pairs;
  for (const auto& [k, v] : dict.dict()) pairs.push_back(Value::List({Value::String(k), v}, true));
  return SortedBy(
      pairs, [&](const Value& pair) { return SortKey(pair.list()[by_value ? 1 : 0], nullptr, case_sensitive); },
      reverse);
}

// unique(case_sensitive, attribute): first occurrences, in order.
Value UniqueFilter(const Value& seq, const CallArgs& args) {
  const bool case_sensitive = FlagArg(args, 0, "case_sensitive");
  const Value* attribute = OptionalArg(args, 1, "attribute");
  ValueList out;
  ValueList seen;
  for (const Value& item : Iterate(seq)) {
    Value key = SortKey(item, attribute, case_sensitive);
    bool repeated = false;
    for (const Value& s : seen) repeated = repeated || Equal(s, key);
    if (repeated) continue;
    seen.push_back(std::move(key));
    out.push_back(item);
  }
  return Value::List(std::move(out));
}

// min / max(case_sensitive, attribute); Undefined for an empty sequence.
Value ExtremeFilter(const Value& seq, const CallArgs& args, bool max) {
  const bool case_sensitive = FlagArg(args, 0, "case_sensitive");
  const Value* attribute = OptionalArg(args, 1, "attribute");
  Value best;
  Value best_key;
  for (const Value& item : Iterate(seq)) {
    Value key = SortKey(item, attribute, case_sensitive);
    if (best.is_undefined() || (max ? Less(best_key, key) : Less(key, best_key))) {
      best = item;
      best_key = std::move(key);
    }
  }
  return best;
}

// sum(attribute, start=0).
Value SumFilter(const Value& seq, const CallArgs& args) {
  const Value* attribute = OptionalArg(args, 0, "attribute");
  const Value* start = OptionalArg(args, 1, "start");
  Value total = start != nullptr ? *start : Value::Int(0);
  for (const Value& item : Iterate(seq)) {
    total = BinaryOp("+", total, attribute != nullptr ? Attribute(item, attribute->Str()) : item);
  }
  return total;
}

constexpr std::string_view kFilters[] = {
    "abs",    "capitalize", "count", "d",      "default", "dictsort", "first",  "float",      "indent",
    "int",    "items",      "join",  "last",   "length",  "list",     "lower",  "map",        "max",
    "min",    "reject",     "rejectattr", "replace", "reverse", "safe", "select", "selectattr", "sort",
    "string", "sum",        "title", "tojson", "trim",    "unique",   "upper",
};

constexpr std::string_view kTests[] = {
    "!=",      "<",       "<=",     "==",    ">",       ">=",       "boolean", "callable", "defined",
    "divisibleby", "eq",  "equalto", "even",  "false",   "float",    "ge",      "gt",       "in",
    "integer", "iterable", "le",    "lower", "lt",      "mapping",  "ne",      "none",     "number",
    "odd",     "sameas",  "sequence", "string", "true",  "undefined", "upper",
};

}  // namespace

bool IsKnownFilter(std::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool IsKnownTest(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

size_t Length(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return Characters(value.string()).size();
    case Value::Kind::kList:
      return value.list().size();
    case Value::Kind::kDict:
      return value.dict().size();
    default:
      Fail(absl::StrCat("object of type '", value.TypeName(), "' has no len()"));
  }
}

ValueList Iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return value.list();
    case Value::Kind::kDict: {
      ValueList keys;
      for (const auto& [k, v] : value.dict()) keys.push_back(Value::String(k));
      return keys;
    }
    case Value::Kind::kString: {
      ValueList chars;
      for (std::string_view c : Characters(value.string())) chars.push_back(Value::String(std::string(c)));
      return chars;
    }
    default:
      Fail(absl::StrCat("'", value.TypeName(), "' object is not iterable"));
  }
}

bool Contains(const Value& haystack, const Value& needle) {
  switch (haystack.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!needle.is_string()) {
        Fail(absl::StrCat("'in <string>' requires string as left operand, not ", needle.TypeName()));
      }
      return haystack.string().find(needle.string()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : haystack.list()) {
        if (Equal(v, needle)) return true;
      }
      return false;
    case Value::Kind::kDict:
    case Value::Kind::kNamespace:
      return needle.is_string() && haystack.Find(needle.string()) != nullptr;
    default:
      Fail(absl::StrCat("argument of type '", haystack.TypeName(), "' is not iterable"));
  }
}

Value GetAttribute(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case Value::Kind::kUndefined:
      Fail(absl::StrCat("cannot read '", std::string(name), "' of an undefined value"));
    case Value::Kind::kString:
      return StringMethod(object.string(), name);
    case Value::Kind::kDict: {
      Value method = DictMethod(object, name);
      if (!method.is_undefined()) return method;
      const Value* v = object.Find(name);
      return v != nullptr ? *v : Value();
    }
    case Value::Kind::kNamespace: {
      const Value* v = object.Find(name);
      return v != nullptr ? *v : Value();
    }
    case Value::Kind::kList:
      if (name == "append" || name == "extend" || name == "insert" || name == "pop" || name == "remove") {
        return Method(absl::StrCat("list.", std::string(name)),
                      [](const CallArgs&) -> Value { Fail("lists are immutable in chat templates"); });
      }
      return Value();
    default:
      return Value();
  }
}

Value GetItem(const Value& object, const Value& key) {
  switch (object.kind()) {
    case Value::Kind::kUndefined:
      Fail(absl::StrCat("cannot read [", key.Repr(), "] of an undefined value"));
    case Value::Kind::kDict:
    case Value::Kind::kNamespace: {
      if (!key.is_string()) return Value();
      const Value* v = object.Find(key.string());
      return v != nullptr ? *v : Value();
    }
    case Value::Kind::kList: {
      if (!IsInt(key)) return key.is_string() ? GetAttribute(object, key.string()) : Value();
      const int64_t i = NormalizeIndex(key.integer(), object.list().size());
      return i < 0 ? Value() : object.list()[static_cast<size_t>(i)];
    }
    case Value::Kind::kString: {
      if (!IsInt(key)) return key.is_string() ? GetAttribute(object, key.string()) : Value();
      std::vector<std::string_view> chars = Characters(object.string());
      const int64_t i = NormalizeIndex(key.integer(), chars.size());
      return i < 0 ? Value() : Value::String(std::string(chars[static_cast<size_t>(i)]));
    }
    default:
      return Value();
  }
}

Value Slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  const auto bound = [](const Value& v, const char* what) -> const Value* {
    if (v.is_undefined() || v.is_none()) return nullptr;
    if (!IsInt(v)) Fail(absl::StrCat("slice ", std::string(what), " must be an integer or None"));
    return &v;
  };
  const Value* b = bound(start, "start");
  const Value* e = bound(stop, "stop");
  const Value* s = bound(step, "step");
  const int64_t st = s != nullptr ? s->integer() : 1;
  if (st == 0) Fail("slice step cannot be zero");
  std::vector<std::string_view> chars;
  size_t n = 0;
  if (object.is_string()) {
    chars = Characters(object.string());
    n = chars.size();
  } else if (object.is_list()) {
    n = object.list().size();
  } else if (object.is_undefined()) {
    Fail("cannot slice an undefined value");
  } else {
    Fail(absl::StrCat("'", object.TypeName(), "' object is not subscriptable"));
  }
  const int64_t len = static_cast<int64_t>(n);
  // Python's slice.indices().
  const auto clamp = [&](const Value* v, int64_t fallback) {
    if (v == nullptr) return fallback;
    int64_t i = v->integer();
    if (i < 0) i += len;
    if (st > 0) return std::clamp<int64_t>(i, 0, len);
    return std::clamp<int64_t>(i, -1, len - 1);
  };
  const int64_t from = clamp(b, st > 0 ? 0 : len - 1);
  const int64_t to = clamp(e, st > 0 ? len : -1);
  std::vector<size_t> picks;
  for (int64_t i = from; st > 0 ? i < to : i > to; i += st) picks.push_back(static_cast<size_t>(i));
  if (object.is_string()) {
    std::string out;
    for (size_t i : picks) out += chars[i];
    return Value::String(std::move(out));
  }
  ValueList out;
  for (size_t i : picks) out.push_back(object.list()[i]);
  return Value::List(std::move(out), object.is_tuple());
}

Value BinaryOp(std::string_view op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string out = a.Str() + b.Str();
    CheckStringSize(out.size());
    return Value::String(std::move(out));
  }
  if (a.is_undefined() || b.is_undefined()) Fail(absl::StrCat("an undefined value in '", std::string(op), "'"));
  const bool ints = IsInt(a) && IsInt(b);
  const bool numbers = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) return Value::Int(CheckedAdd(a.integer(), b.integer()));
    if (numbers) return Value::Float(a.number() + b.number());
    if (a.is_string() && b.is_string()) {
      CheckStringSize(a.string().size() + b.string().size());
      return Value::String(a.string() + b.string());
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      ValueList out = a.list();
      out.insert(out.end(), b.list().begin(), b.list().end());
      return Value::List(std::move(out), a.is_tuple());
    }
    Unsupported(op, a, b);
  }
  if (op == "-") {
    if (ints) return Value::Int(CheckedSub(a.integer(), b.integer()));
    if (numbers) return Value::Float(a.number() - b.number());
    Unsupported(op, a, b);
  }
  if (op == "*") {
    if (ints) return Value::Int(CheckedMul(a.integer(), b.integer()));
    if (numbers) return Value::Float(a.number() * b.number());
    if ((a.is_string() || a.is_list()) && IsInt(b)) return Repeat(a, b.integer());
    if ((b.is_string() || b.is_list()) && IsInt(a)) return Repeat(b, a.integer());
    Unsupported(op, a, b);
  }
  if (!numbers) Unsupported(op, a, b);
  if (op == "/") {
    if (b.number() == 0) Fail("division by zero");
    return Value::Float(a.number() / b.number());
  }
  if (op == "//" || op == "%") {
    if (b.number() == 0) Fail(op == "%" ? "modulo by zero" : "integer division or modulo by zero");
    if (ints) {
      const int64_t x = a.integer();
      const int64_t y = b.integer();
      if (x == std::numeric_limits<int64_t>::min() && y == -1) Overflow();
      int64_t q = x / y;
      int64_t r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        --q;
        r += y;
      }
      return Value::Int(op == "//" ? q : r);
    }
    const double m = FloorMod(a.number(), b.number());
    return Value::Float(op == "%" ? m : std::round((a.number() - m) / b.number()));
  }
  if (op == "**") {
    if (ints && b.integer() >= 0) {
      const int64_t base = a.integer();
      const int64_t exponent = b.integer();
      if (base == 0 || base == 1) return Value::Int(exponent == 0 ? 1 : base);
      if (base == -1) return Value::Int(exponent % 2 == 0 ? 1 : -1);
      int64_t r = 1;  // |base| >= 2: overflows within 63 steps
      for (int64_t i = 0; i < exponent; ++i) r = CheckedMul(r, base);
      return Value::Int(r);
    }
    if (a.number() == 0 && b.number() < 0) Fail("0.0 cannot be raised to a negative power");
    return Value::Float(std::pow(a.number(), b.number()));
  }
  Fail(absl::StrCat("unknown operator '", std::string(op), "'"));
}

bool ApplyTest(std::string_view name, const Value& v, const CallArgs& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind() == K::kInt;
  if (name == "float") return v.kind() == K::kFloat;
  if (name == "boolean") return v.kind() == K::kBool;
  if (name == "true") return v.kind() == K::kBool && v.boolean();
  if (name == "false") return v.kind() == K::kBool && !v.boolean();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "callable") return v.kind() == K::kCallable;
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    return v.string() == MapCase(v.string(), name == "upper");
  }
  if (name == "even" || name == "odd") {
    if (!IsInt(v)) Fail(absl::StrCat("the '", std::string(name), "' test needs an integer"));
    return (v.integer() % 2 == 0) == (name == "even");
  }
  if (name == "divisibleby") {
    const Value& n = Arg(args, 0, "num", "divisibleby");
    if (!IsInt(v) || !IsInt(n) || n.integer() == 0) Fail("divisibleby needs integers and a non-zero divisor");
    return v.integer() % n.integer() == 0;
  }
  const Value& other = Arg(args, 0, "other", name);
  if (name == "eq" || name == "equalto" || name == "==") return Equal(v, other);
  if (name == "ne" || name == "!=") return !Equal(v, other);
  if (name == "lt" || name == "<") return Less(v, other);
  if (name == "le" || name == "<=") return !Less(other, v);
  if (name == "gt" || name == ">") return Less(other, v);
  if (name == "ge" || name == ">=") return !Less(v, other);
  if (name == "in") return Contains(other, v);
  if (name == "sameas") {
    if (v.kind() != other.kind()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.kind() == K::kBool) return v.boolean() == other.boolean();
    return Equal(v, other) && (IsInt(v) || v.kind() == K::kFloat);
  }
  Fail(absl::StrCat("unknown test '", std::string(name), "'"));
}

Value ApplyFilter(std::string_view name, const Value& v, const CallArgs& args) {
  if (name == "safe") return v;
  if (name == "default" || name == "d") {
    const Value* boolean = OptionalArg(args, 1, "boolean");
    const bool use_default = v.is_undefined() || (boolean != nullptr && boolean->Truthy() && !v.Truthy());
    if (!use_default) return v;
    const Value* fallback = args.Get(0, "default_value");
    return fallback != nullptr ? *fallback : Value::String("");
  }
  if (name == "length" || name == "count") return Value::Int(static_cast<int64_t>(Length(v)));
  if (name == "tojson") {
    // Hugging Face's signature: tojson(x, ensure_ascii=False, indent=None, separators=None,
    // sort_keys=False).
    JsonFormat format;
    const Value* ensure_ascii = OptionalArg(args, 0, "ensure_ascii");
    format.ensure_ascii = ensure_ascii != nullptr && ensure_ascii->Truthy();
    const Value* indent = OptionalArg(args, 1, "indent");
    if (indent != nullptr && !indent->is_none()) {
      format.indent = indent->is_string() ? -2 : static_cast<int>(std::clamp<int64_t>(IntArg(indent, -1), -1, 64));
      if (format.indent == -2) Fail("tojson: a string indent is not supported");
      format.indent = std::max(format.indent, 0);  // Python: a negative indent still breaks lines
    }
    const Value* separators = OptionalArg(args, 2, "separators");
    if (separators != nullptr && !separators->is_none()) {
      if (!separators->is_list() || separators->list().size() != 2 || !separators->list()[0].is_string() ||
          !separators->list()[1].is_string()) {
        Fail("tojson: separators must be a pair of strings");
      }
      format.item_separator = separators->list()[0].string();
      format.key_separator = separators->list()[1].string();
    }
    const Value* sort_keys = OptionalArg(args, 3, "sort_keys");
    format.sort_keys = sort_keys != nullptr && sort_keys->Truthy();
    std::string json = ToJson(v, format);
    CheckStringSize(json.size());
    return Value::String(std::move(json));
  }
  if (name == "string") return Value::String(v.Str());
  if (name == "trim") return Value::String(PyStrip(v.Str(), OptionalArg(args, 0, "chars"), true, true));
  if (name == "upper" || name == "lower") return Value::String(MapCase(v.Str(), name == "upper"));
  if (name == "title") return Value::String(JinjaTitle(v.Str()));
  if (name == "capitalize") return Value::String(PyCapitalize(v.Str()));
  if (name == "replace") {
    return Value::String(PyReplace(v.Str(), Arg(args, 0, "old", "replace").Str(), Arg(args, 1, "new", "replace").Str(),
                                   IntArg(OptionalArg(args, 2, "count"), -1)));
  }
  if (name == "indent") return Value::String(IndentFilter(v.Str(), args));
  if (name == "join") {
    const Value* separator = OptionalArg(args, 0, "d");
    const std::string sep = separator != nullptr ? separator->Str() : "";
    const Value* attribute = OptionalArg(args, 1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : Iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += (attribute != nullptr ? Attribute(item, attribute->Str()) : item).Str();
      CheckStringSize(out.size());
    }
    return Value::String(std::move(out));
  }
  if (name == "first" || name == "last") {
    ValueList items = Iterate(v);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::List(Iterate(v));
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<std::string_view> chars = Characters(v.string());
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
      return Value::String(std::move(out));
    }
    ValueList items = Iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::List({});
    if (!v.is_dict()) Fail(absl::StrCat("the items filter needs a mapping, got ", v.TypeName()));
    return GetAttribute(v, "items").Call({});
  }
  if (name == "int") return IntFilter(v, args);
  if (name == "float") return FloatFilter(v, args);
  if (name == "abs") {
    if (IsInt(v)) {
      if (v.integer() == std::numeric_limits<int64_t>::min()) Overflow();
      return Value::Int(std::abs(v.integer()));
    }
    if (v.kind() == Value::Kind::kFloat) return Value::Float(std::fabs(v.number()));
    Fail(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
  }
  if (name == "selectattr" || name == "rejectattr") return SelectFilter(v, args, true, name == "selectattr");
  if (name == "select" || name == "reject") return SelectFilter(v, args, false, name == "select");
  if (name == "map") return MapFilter(v, args);
  if (name == "sort") return SortFilter(v, args);
  if (name == "dictsort") return DictSortFilter(v, args);
  if (name == "unique") return UniqueFilter(v, args);
  if (name == "min" || name == "max") return ExtremeFilter(v, args, name == "max");
  if (name == "sum") return SumFilter(v, args);
  Fail(absl::StrCat("unknown filter '", std::string(name), "'"));
}

}  // namespace bitfleet::chat::jinja

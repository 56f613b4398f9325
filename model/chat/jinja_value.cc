#include "model/chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace bitfleet::chat::jinja {
namespace {

thread_local size_t string_limit = 0;

void CheckDepth(int depth) {
  if (depth > kMaxValueDepth) {
    throw JinjaError{absl::StrCat("values nested more than ", kMaxValueDepth, " deep (or a namespace holding itself)")};
  }
}

}  // namespace

void SetStringLimit(size_t max_bytes) { string_limit = max_bytes; }

void CheckStringSize(size_t bytes) {
  if (string_limit > 0 && bytes > string_limit) {
    throw JinjaError{absl::StrCat("the template built a string of more than ", string_limit,
                                  " bytes (the render's limit)")};
  }
}

const Value* CallArgs::Get(size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  return Keyword(name);
}

const Value* CallArgs::Keyword(std::string_view name) const {
  for (const auto& [key, value] : keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.bool_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.int_ = i;
  return v;
}

Value Value::Float(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.float_ = d;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.string_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::List(ValueList items, bool tuple) {
  Value v;
  v.kind_ = Kind::kList;
  v.tuple_ = tuple;
  v.list_ = std::make_shared<const ValueList>(std::move(items));
  return v;
}

Value Value::Dict(ValueDict entries) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<ValueDict>(std::move(entries));
  return v;
}

Value Value::Namespace(ValueDict entries) {
  Value v = Dict(std::move(entries));
  v.kind_ = Kind::kNamespace;
  return v;
}

Value Value::Function(std::string name, Callable call) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.string_ = std::make_shared<const std::string>(std::move(name));
  v.callable_ = std::make_shared<const Callable>(std::move(call));
  return v;
}

double Value::number() const {
  switch (kind_) {
    case Kind::kFloat:
      return float_;
    case Kind::kInt:
      return static_cast<double>(int_);
    case Kind::kBool:
      return bool_ ? 1 : 0;
    default:
      throw JinjaError{absl::StrCat("expected a number, got ", TypeName())};
  }
}

const ValueDict& Value::dict() const {
  static const ValueDict kEmpty;
  return dict_ ? *dict_ : kEmpty;
}

const Value* Value::Find(std::string_view key) const {
  if (!dict_) return nullptr;
  for (const auto& [k, v] : *dict_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::DropAttributes() const {
  if (kind_ == Kind::kNamespace) dict_->clear();
}

void Value::SetAttribute(const std::string& key, Value value) const {
  if (kind_ != Kind::kNamespace) {
    throw JinjaError{absl::StrCat("cannot assign attribute '", key, "' on a ", TypeName(), " (only a namespace)")};
  }
  for (auto& [k, v] : *dict_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  dict_->emplace_back(key, std::move(value));
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return bool_;
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0;
    case Kind::kString:
      return !string_->empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      return !dict_->empty();
    case Kind::kNamespace:
    case Kind::kCallable:
      return true;
  }
  return false;
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return tuple_ ? "tuple" : "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kCallable:
      return "function";
  }
  return "?";
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits in scientific form, then laid out as Python's repr does.
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, result.ptr);
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::atoi(sci.c_str() + e + 1);
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp;
  }
  if (exponent < 0) return absl::StrCat(out, "0.", std::string(-exponent - 1, '0'), digits);
  const size_t int_digits = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= int_digits) return absl::StrCat(out, digits, std::string(int_digits - digits.size(), '0'), ".0");
  return absl::StrCat(out, digits.substr(0, int_digits), ".", digits.substr(int_digits));
}

std::string StringRepr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\' || c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return *string_;
    default:
      return Repr();
  }
}

std::string Value::Repr() const {
  std::string out;
  AppendRepr(0, &out);
  return out;
}

void Value::AppendRepr(int depth, std::string* out) const {
  CheckDepth(depth);
  CheckStringSize(out->size());
  switch (kind_) {
    case Kind::kUndefined:
      return;
    case Kind::kNone:
      *out += "None";
      return;
    case Kind::kBool:
      *out += bool_ ? "True" : "False";
      return;
    case Kind::kInt:
      absl::StrAppend(out, int_);
      return;
    case Kind::kFloat:
      *out += FloatRepr(float_);
      return;
    case Kind::kString:
      *out += StringRepr(*string_);
      return;
    case Kind::kList: {
      *out += tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) *out += ", ";
        (*list_)[i].AppendRepr(depth + 1, out);
      }
      if (tuple_ && list_->size() == 1) *out += ",";
      *out += tuple_ ? ")" : "]";
      return;
    }
    case Kind::kDict:
    case Kind::kNamespace: {
      *out += kind_ == Kind::kNamespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [key, value] : *dict_) {
        if (!first) *out += ", ";
        first = false;
        absl::StrAppend(out, StringRepr(key), ": ");
        value.AppendRepr(depth + 1, out);
      }
      *out += kind_ == Kind::kNamespace ? "}>" : "}";
      return;
    }
    case Kind::kCallable:
      absl::StrAppend(out, "<function ", *string_, ">");
      return;
  }
}

namespace {

bool EqualAt(const Value& a, const Value& b, int depth) {
  CheckDepth(depth);
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::kFloat || b.kind() == K::kFloat) return a.number() == b.number();
    return a.integer() == b.integer();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone:
      return true;
    case K::kString:
      return a.string() == b.string();
    case K::kList: {
      if (a.is_tuple() != b.is_tuple() || a.list().size() != b.list().size()) return false;
      for (size_t i = 0; i < a.list().size(); ++i) {
        if (!EqualAt(a.list()[i], b.list()[i], depth + 1)) return false;
      }
      return true;
    }
    case K::kDict: {
      if (a.dict().size() != b.dict().size()) return false;
      for (const auto& [key, value] : a.dict()) {
        const Value* other = b.Find(key);
        if (other == nullptr || !EqualAt(value, *other, depth + 1)) return false;
      }
      return true;
    }
    default:
      return a.SameObject(b);
  }
}

bool LessAt(const Value& a, const Value& b, int depth) {
  CheckDepth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) return a.number() < b.number();
    return a.integer() < b.integer();
  }
  if (a.is_string() && b.is_string()) return a.string() < b.string();  // UTF-8 bytes order as code points
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const ValueList& x = a.list();
    const ValueList& y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (LessAt(x[i], y[i], depth + 1)) return true;
      if (LessAt(y[i], x[i], depth + 1)) return false;
    }
    return x.size() < y.size();
  }
  throw JinjaError{absl::StrCat("'<' not supported between instances of '", a.TypeName(), "' and '", b.TypeName(),
                                "'")};
}


void AppendEscape(uint32_t unit, std::string* out) {
  char hex[8];
  std::snprintf(hex, sizeof(hex), "\\u%04x", unit);
  *out += hex;
}

void JsonString(std::string_view s, bool ensure_ascii, std::string* out) {
  *out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (ensure_ascii && c >= 0x80) {
      // One UTF-8 sequence as Python escapes its code point (a stray byte as itself).
      size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      n = std::min(n, s.size() - i);
      uint32_t cp = n == 1 ? c : c & (0x7F >> n);
      for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
      if (cp >= 0x10000) {
        AppendEscape(0xD800 + ((cp - 0x10000) >> 10), out);
        AppendEscape(0xDC00 + ((cp - 0x10000) & 0x3FF), out);
      } else {
        AppendEscape(cp, out);
      }
      i += n - 1;
      continue;
    }
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          AppendEscape(c, out);
        } else {
          *out += static_cast<char>(c);
        }
    }
  }
  *out += '"';
}

void AppendJson(const Value& value, const JsonFormat& format, int depth, std::string* out) {
  CheckDepth(depth);
  CheckStringSize(out->size());
  using K = Value::Kind;
  const int indent = format.indent;
  const auto newline = [&](int level) {
    *out += '\n';
    out->append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
  };
  const std::string item_separator =
      !format.item_separator.empty() ? format.item_separator : indent >= 0 ? "," : ", ";
  const std::string key_separator = !format.key_separator.empty() ? format.key_separator : ": ";
  switch (value.kind()) {
    case K::kNone:
      *out += "null";
      return;
    case K::kBool:
      *out += value.boolean() ? "true" : "false";
      return;
    case K::kInt:
      absl::StrAppend(out, value.integer());
      return;
    case K::kFloat: {
      const double d = value.number();
      if (std::isnan(d)) {
        *out += "NaN";
      } else if (std::isinf(d)) {
        *out += d > 0 ? "Infinity" : "-Infinity";
      } else {
        *out += FloatRepr(d);
      }
      return;
    }
    case K::kString:
      JsonString(value.string(), format.ensure_ascii, out);
      return;
    case K::kList: {
      if (value.list().empty()) {
        *out += "[]";
        return;
      }
      *out += '[';
      for (size_t i = 0; i < value.list().size(); ++i) {
        if (i > 0) *out += item_separator;
        if (indent >= 0) newline(depth + 1);
        AppendJson(value.list()[i], format, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      *out += ']';
      return;
    }
    case K::kDict: {
      if (value.dict().empty()) {
        *out += "{}";
        return;
      }
      *out += '{';
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : value.dict()) entries.push_back(&entry);
      if (format.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) *out += item_separator;
        if (indent >= 0) newline(depth + 1);
        JsonString(entries[i]->first, format.ensure_ascii, out);
        *out += key_separator;
        AppendJson(entries[i]->second, format, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      *out += '}';
      return;
    }
    default:
      throw JinjaError{absl::StrCat("Object of type ", value.TypeName(), " is not JSON serializable")};
  }
}

}  // namespace

bool Equal(const Value& a, const Value& b) { return EqualAt(a, b, 0); }
bool Less(const Value& a, const Value& b) { return LessAt(a, b, 0); }

std::string ToJson(const Value& value, const JsonFormat& format) {
  std::string out;
  AppendJson(value, format, 0, &out);
  return out;
}

}  // namespace bitfleet::chat::jinja

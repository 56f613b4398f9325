// The filters, tests, attribute / item lookups, methods and Python operators of the chat-template
// subset (docs/chat-templates.md), with Python's and Jinja's semantics. All throw JinjaError for
// what Python or Jinja would refuse.
#pragma once

#include <string>
#include <string_view>

#include "model/chat/jinja_value.h"

namespace bitfleet::chat::jinja {

bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);

// `value | name(args)`.
Value ApplyFilter(std::string_view name, const Value& value, const CallArgs& args);
// `value is name(args)`.
bool ApplyTest(std::string_view name, const Value& value, const CallArgs& args);

// `object.name` (Jinja: the attribute, else the item; methods of str and dict are bound here)
// and `object[key]`; a missing key or index gives Undefined, a lookup on Undefined raises.
Value GetAttribute(const Value& object, const std::string& name);
Value GetItem(const Value& object, const Value& key);
// `object[start:stop:step]` on lists, tuples and strings (absent parts are Undefined).
Value Slice(const Value& object, const Value& start, const Value& stop, const Value& step);

// Python's binary operators: + - * / // % ** and Jinja's ~.
Value BinaryOp(std::string_view op, const Value& a, const Value& b);
// `needle in haystack`.
bool Contains(const Value& haystack, const Value& needle);
// What `for` iterates: list items, dict keys, a string's characters; Undefined gives nothing.
ValueList Iterate(const Value& value);

// Python's len(): code points of a string, items of a list or dict.
size_t Length(const Value& value);

}  // namespace bitfleet::chat::jinja

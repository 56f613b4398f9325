// The parsed form of a chat template (jinja_parser.h builds it, jinja_interpreter.h runs it).
// Each node keeps the template line it came from, for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/chat/jinja_value.h"

namespace bitfleet::chat::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,      // literal
    kName,         // name
    kList,         // children: items
    kTuple,        // children: items
    kDict,         // children: key, value, key, value, ...
    kGetAttr,      // children[0].name
    kGetItem,      // children[0][children[1]]
    kSlice,        // children[0][children[1]:children[2]:children[3]] (absent parts null)
    kCall,         // children[0](children[1..], keyword)
    kFilter,       // children[0] | name(children[1..], keyword)
    kTest,         // children[0] is [not] name(children[1..])
    kNegate,       // -children[0]  (op "-" or "+")
    kNot,          // not children[0]
    kBinary,       // children[0] op children[1]: + - * / // % ** ~
    kCompare,      // children[0] ops[0] children[1] ops[1] children[2] ...
    kAnd,          // children[0] and children[1]
    kOr,           // children[0] or children[1]
    kConditional,  // children[1] if children[0] else children[2] (null: undefined)
  };

  Kind kind = Kind::kLiteral;
  int line = 0;
  Value literal;
  std::string name;  // a name, attribute, filter or test; the operator of kNegate / kBinary
  bool negated = false;  // kTest: `is not`
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> keyword;  // kCall / kFilter / kTest
  std::vector<std::string> ops;  // kCompare: == != < <= > >= in notin
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (a null condition is the else branch)
    kFor,       // for targets in expr [if filter]: body, else_body
    kSet,       // set targets = expr, or set targets[0].attribute = expr
    kSetBlock,  // {% set targets[0] %}body{% endset %}
    kMacro,     // macro name(params): body
    kBreak,
    kContinue,
    kBlock,     // body rendered in place (generation / endgeneration)
  };

  Kind kind = Kind::kText;
  int line = 0;
  std::string text;
  ExprPtr expr;
  std::vector<std::pair<ExprPtr, NodeList>> branches;
  std::vector<std::string> targets;
  std::string attribute;
  ExprPtr filter;
  NodeList body;
  NodeList else_body;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters and their defaults
};

}  // namespace bitfleet::chat::jinja

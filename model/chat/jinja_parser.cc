#include "model/chat/jinja_parser.h"

#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/chat/jinja_lexer.h"

namespace bitfleet::chat::jinja {
namespace {

// Recursive descent with Jinja's precedence, lowest first: conditional, or, and, not,
// comparisons, + -, ~, * / // %, **, unary - +, then postfix (.attr, [item], (call)) and
// filters / tests.
class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  NodeList ParseTemplate() {
    NodeList nodes = ParseBody({});
    if (Peek().kind != TokenKind::kEnd) Fail(Peek(), "unexpected tag");
    return nodes;
  }

 private:
  // Bounds the parser's recursion.
  class Nest {
   public:
    explicit Nest(Parser* p) : p_(p) {
      if (++p_->depth_ > kMaxNesting) p_->Fail(p_->Peek(), "nesting too deep");
    }
    ~Nest() { --p_->depth_; }

   private:
    Parser* p_;
  };

  const Token& Peek(size_t ahead = 0) const {
    const size_t i = pos_ + ahead;
    return i < tokens_.size() ? tokens_[i] : tokens_.back();
  }
  const Token& Next() {
    const Token& t = Peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return t;
  }
  bool IsName(const Token& t, std::string_view name) const { return t.kind == TokenKind::kName && t.text == name; }
  bool IsOp(const Token& t, std::string_view op) const { return t.kind == TokenKind::kOperator && t.text == op; }
  bool SkipName(std::string_view name) {
    if (!IsName(Peek(), name)) return false;
    Next();
    return true;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(Peek(), op)) return false;
    Next();
    return true;
  }

  [[noreturn]] void Fail(const Token& at, const std::string& what) const {
    std::string near;
    switch (at.kind) {
      case TokenKind::kEnd:
        near = "the end of the template";
        break;
      case TokenKind::kBlockEnd:
        near = "'%}'";
        break;
      case TokenKind::kVariableEnd:
        near = "'}}'";
        break;
      case TokenKind::kText:
        near = "text";
        break;
      default:
        near = absl::StrCat("'", at.text, "'");
    }
    throw JinjaError{absl::StrCat("template line ", at.line, ": ", what, " (at ", near, ")")};
  }
  void ExpectOp(std::string_view op) {
    if (!SkipOp(op)) Fail(Peek(), absl::StrCat("expected '", std::string(op), "'"));
  }
  void ExpectBlockEnd() {
    if (Peek().kind != TokenKind::kBlockEnd) Fail(Peek(), "expected the end of the tag '%}'");
    Next();
  }
  std::string ExpectName() {
    if (Peek().kind != TokenKind::kName) Fail(Peek(), "expected a name");
    return Next().text;
  }

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements ----

  // Nodes up to a block tag named in `ends` (left unread, positioned at its name) or the end.
  NodeList ParseBody(std::initializer_list<std::string_view> ends) {
    Nest nest(this);
    NodeList nodes;
    while (true) {
      const Token& t = Peek();
      if (t.kind == TokenKind::kEnd) {
        if (ends.size() > 0) {
          Fail(t, absl::StrCat("missing {% ", std::string(*(ends.end() - 1)), " %}"));
        }
        return nodes;
      }
      if (t.kind == TokenKind::kText) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kText;
        node->line = t.line;
        node->text = Next().text;
        nodes.push_back(std::move(node));
      } else if (t.kind == TokenKind::kVariableBegin) {
        Next();
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kOutput;
        node->line = t.line;
        node->expr = ParseTuple(true);
        if (Peek().kind != TokenKind::kVariableEnd) Fail(Peek(), "expected '}}'");
        Next();
        nodes.push_back(std::move(node));
      } else if (t.kind == TokenKind::kBlockBegin) {
        const Token& name = Peek(1);
        for (std::string_view end : ends) {
          if (IsName(name, end)) {
            Next();
            return nodes;
          }
        }
        Next();
        nodes.push_back(ParseStatement());
      } else {
        Fail(t, "unexpected token");
      }
    }
  }

  // After the end name of a body: consumes it (must be `end`) and the tag's close.
  void EndTag(std::string_view end) {
    if (!SkipName(end)) Fail(Peek(), absl::StrCat("expected {% ", std::string(end), " %}"));
    ExpectBlockEnd();
  }

  NodePtr ParseStatement() {
    const Token& t = Peek();
    if (t.kind != TokenKind::kName) Fail(t, "expected a tag name after '{%'");
    const std::string tag = Next().text;
    auto node = std::make_unique<Node>();
    node->line = t.line;
    if (tag == "if") {
      node->kind = Node::Kind::kIf;
      ExprPtr condition = ParseTuple(false);
      while (true) {
        ExpectBlockEnd();
        NodeList body = ParseBody({"elif", "else", "endif"});
        node->branches.emplace_back(std::move(condition), std::move(body));
        if (SkipName("elif")) {
          condition = ParseTuple(false);
          continue;
        }
        if (SkipName("else")) {
          ExpectBlockEnd();
          node->branches.emplace_back(nullptr, ParseBody({"endif"}));
        }
        EndTag("endif");
        return node;
      }
    }
    if (tag == "for") {
      node->kind = Node::Kind::kFor;
      node->targets.push_back(ExpectName());
      while (SkipOp(",")) node->targets.push_back(ExpectName());
      if (!SkipName("in")) Fail(Peek(), "expected 'in' in a for tag");
      node->expr = ParseTuple(false);
      if (SkipName("if")) node->filter = ParseExpression(true);
      if (IsName(Peek(), "recursive")) Fail(Peek(), "recursive loops are not supported");
      ExpectBlockEnd();
      node->body = ParseBody({"else", "endfor"});
      if (SkipName("else")) {
        ExpectBlockEnd();
        node->else_body = ParseBody({"endfor"});
      }
      EndTag("endfor");
      return node;
    }
    if (tag == "set") {
      node->targets.push_back(ExpectName());
      if (SkipOp(".")) {
        node->attribute = ExpectName();
      } else {
        while (SkipOp(",")) node->targets.push_back(ExpectName());
      }
      if (SkipOp("=")) {
        node->kind = Node::Kind::kSet;
        node->expr = ParseTuple(true);
        ExpectBlockEnd();
        return node;
      }
      if (node->targets.size() != 1 || !node->attribute.empty()) Fail(Peek(), "expected '=' in a set tag");
      node->kind = Node::Kind::kSetBlock;
      ExpectBlockEnd();
      node->body = ParseBody({"endset"});
      EndTag("endset");
      return node;
    }
    if (tag == "macro") {
      node->kind = Node::Kind::kMacro;
      node->name = ExpectName();
      ExpectOp("(");
      while (!SkipOp(")")) {
        std::string param = ExpectName();
        ExprPtr default_value = SkipOp("=") ? ParseExpression(true) : nullptr;
        node->params.emplace_back(std::move(param), std::move(default_value));
        if (!IsOp(Peek(), ")")) ExpectOp(",");
      }
      ExpectBlockEnd();
      node->body = ParseBody({"endmacro"});
      EndTag("endmacro");
      return node;
    }
    if (tag == "break" || tag == "continue") {
      node->kind = tag == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      ExpectBlockEnd();
      return node;
    }
    if (tag == "generation") {  // Hugging Face's marker of assistant text; renders its body
      node->kind = Node::Kind::kBlock;
      ExpectBlockEnd();
      node->body = ParseBody({"endgeneration"});
      EndTag("endgeneration");
      return node;
    }
    Fail(t, absl::StrCat("the tag '", tag, "' is not supported in chat templates"));
  }

  // ---- expressions ----

  // Comma-separated expressions: one without a trailing comma is itself, else a tuple.
  ExprPtr ParseTuple(bool with_condition) {
    const int line = Peek().line;
    std::vector<ExprPtr> items;
    bool comma = false;
    while (true) {
      if (!items.empty()) {
        if (!SkipOp(",")) break;
        comma = true;
        if (!StartsExpression(Peek())) break;
      }
      items.push_back(ParseExpression(with_condition));
    }
    if (items.size() == 1 && !comma) return std::move(items[0]);
    ExprPtr tuple = Make(Expr::Kind::kTuple, line);
    tuple->children = std::move(items);
    return tuple;
  }

  bool StartsExpression(const Token& t) const {
    if (t.kind == TokenKind::kName || t.kind == TokenKind::kString || t.kind == TokenKind::kInteger ||
        t.kind == TokenKind::kFloat) {
      return true;
    }
    return IsOp(t, "(") || IsOp(t, "[") || IsOp(t, "{") || IsOp(t, "-") || IsOp(t, "+");
  }

  ExprPtr ParseExpression(bool with_condition) {
    Nest nest(this);
    ExprPtr expr = ParseOr();
    if (!with_condition) return expr;
    while (IsName(Peek(), "if")) {
      const int line = Next().line;
      ExprPtr conditional = Make(Expr::Kind::kConditional, line);
      conditional->children.push_back(ParseOr());
      conditional->children.push_back(std::move(expr));
      conditional->children.push_back(SkipName("else") ? ParseExpression(true) : nullptr);
      expr = std::move(conditional);
    }
    return expr;
  }

  ExprPtr Binary(Expr::Kind kind, std::string op, ExprPtr left, ExprPtr right, int line) {
    ExprPtr e = Make(kind, line);
    e->name = std::move(op);
    e->children.push_back(std::move(left));
    e->children.push_back(std::move(right));
    return e;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName(Peek(), "or")) {
      const int line = Next().line;
      left = Binary(Expr::Kind::kOr, "or", std::move(left), ParseAnd(), line);
    }
    return left;
  }

  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName(Peek(), "and")) {
      const int line = Next().line;
      left = Binary(Expr::Kind::kAnd, "and", std::move(left), ParseNot(), line);
    }
    return left;
  }

  ExprPtr ParseNot() {
    Nest nest(this);
    if (IsName(Peek(), "not")) {
      ExprPtr e = Make(Expr::Kind::kNot, Next().line);
      e->children.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    const int line = Peek().line;
    ExprPtr first = ParseAdditive();
    ExprPtr compare;
    while (true) {
      std::string op;
      const Token& t = Peek();
      if (t.kind == TokenKind::kOperator &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
        op = t.text;
        Next();
      } else if (IsName(t, "in")) {
        op = "in";
        Next();
      } else if (IsName(t, "not") && IsName(Peek(1), "in")) {
        op = "notin";
        Next();
        Next();
      } else {
        break;
      }
      if (!compare) {
        compare = Make(Expr::Kind::kCompare, line);
        compare->children.push_back(std::move(first));
      }
      compare->ops.push_back(op);
      compare->children.push_back(ParseAdditive());
    }
    return compare ? std::move(compare) : std::move(first);
  }

  ExprPtr ParseAdditive() {
    ExprPtr left = ParseConcat();
    while (IsOp(Peek(), "+") || IsOp(Peek(), "-")) {
      const Token& op = Next();
      left = Binary(Expr::Kind::kBinary, op.text, std::move(left), ParseConcat(), op.line);
    }
    return left;
  }

  ExprPtr ParseConcat() {
    ExprPtr left = ParseMultiplicative();
    while (IsOp(Peek(), "~")) {
      const int line = Next().line;
      left = Binary(Expr::Kind::kBinary, "~", std::move(left), ParseMultiplicative(), line);
    }
    return left;
  }

  ExprPtr ParseMultiplicative() {
    ExprPtr left = ParsePower();
    while (IsOp(Peek(), "*") || IsOp(Peek(), "/") || IsOp(Peek(), "//") || IsOp(Peek(), "%")) {
      const Token& op = Next();
      left = Binary(Expr::Kind::kBinary, op.text, std::move(left), ParsePower(), op.line);
    }
    return left;
  }

  ExprPtr ParsePower() {
    ExprPtr left = ParseUnary(true);
    while (IsOp(Peek(), "**")) {
      const int line = Next().line;
      left = Binary(Expr::Kind::kBinary, "**", std::move(left), ParseUnary(true), line);
    }
    return left;
  }

  ExprPtr ParseUnary(bool with_filter) {
    Nest nest(this);
    ExprPtr node;
    if (IsOp(Peek(), "-") || IsOp(Peek(), "+")) {
      const Token& op = Next();
      node = Make(Expr::Kind::kNegate, op.line);
      node->name = op.text;
      node->children.push_back(ParseUnary(false));
    } else {
      node = ParsePrimary();
    }
    node = ParsePostfix(std::move(node));
    if (with_filter) node = ParseFilters(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token& t = Peek();
    ExprPtr e;
    switch (t.kind) {
      case TokenKind::kName: {
        Next();
        e = Make(Expr::Kind::kLiteral, t.line);
        if (t.text == "true" || t.text == "True") {
          e->literal = Value::Bool(true);
        } else if (t.text == "false" || t.text == "False") {
          e->literal = Value::Bool(false);
        } else if (t.text == "none" || t.text == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        return e;
      }
      case TokenKind::kString: {
        std::string text;
        while (Peek().kind == TokenKind::kString) text += Next().text;  // adjacent literals join
        e = Make(Expr::Kind::kLiteral, t.line);
        e->literal = Value::String(std::move(text));
        return e;
      }
      case TokenKind::kInteger:
        e = Make(Expr::Kind::kLiteral, t.line);
        e->literal = Value::Int(Next().integer);
        return e;
      case TokenKind::kFloat:
        e = Make(Expr::Kind::kLiteral, t.line);
        e->literal = Value::Float(Next().number);
        return e;
      default:
        break;
    }
    if (SkipOp("(")) {
      if (SkipOp(")")) return Make(Expr::Kind::kTuple, t.line);
      e = ParseTuple(true);
      ExpectOp(")");
      return e;
    }
    if (SkipOp("[")) {
      e = Make(Expr::Kind::kList, t.line);
      while (!SkipOp("]")) {
        e->children.push_back(ParseExpression(true));
        if (!IsOp(Peek(), "]")) ExpectOp(",");
      }
      return e;
    }
    if (SkipOp("{")) {
      e = Make(Expr::Kind::kDict, t.line);
      while (!SkipOp("}")) {
        e->children.push_back(ParseExpression(true));
        ExpectOp(":");
        e->children.push_back(ParseExpression(true));
        if (!IsOp(Peek(), "}")) ExpectOp(",");
      }
      return e;
    }
    Fail(t, "expected an expression");
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      const Token& t = Peek();
      if (IsOp(t, ".")) {
        Next();
        const Token& attr = Next();
        if (attr.kind == TokenKind::kName) {
          ExprPtr e = Make(Expr::Kind::kGetAttr, t.line);
          e->name = attr.text;
          e->children.push_back(std::move(node));
          node = std::move(e);
        } else if (attr.kind == TokenKind::kInteger) {
          ExprPtr index = Make(Expr::Kind::kLiteral, t.line);
          index->literal = Value::Int(attr.integer);
          ExprPtr e = Make(Expr::Kind::kGetItem, t.line);
          e->children.push_back(std::move(node));
          e->children.push_back(std::move(index));
          node = std::move(e);
        } else {
          Fail(attr, "expected an attribute name after '.'");
        }
      } else if (IsOp(t, "[")) {
        Next();
        node = ParseSubscript(std::move(node), t.line);
      } else if (IsOp(t, "(")) {
        node = ParseCall(Make(Expr::Kind::kCall, t.line), std::move(node));
      } else {
        return node;
      }
    }
  }

  // After '[': an index or a slice, then ']'.
  ExprPtr ParseSubscript(ExprPtr object, int line) {
    ExprPtr parts[3];
    int part = 0;
    bool slice = false;
    while (true) {
      if (IsOp(Peek(), ":")) {
        Next();
        slice = true;
        if (++part > 2) Fail(Peek(), "too many ':' in a slice");
        continue;
      }
      if (IsOp(Peek(), "]")) break;
      if (parts[part]) Fail(Peek(), "expected ':' or ']'");
      parts[part] = ParseExpression(true);
    }
    Next();
    ExprPtr e = Make(slice ? Expr::Kind::kSlice : Expr::Kind::kGetItem, line);
    e->children.push_back(std::move(object));
    if (!slice) {
      if (!parts[0]) Fail(Peek(), "empty subscript");
      e->children.push_back(std::move(parts[0]));
    } else {
      for (ExprPtr& p : parts) e->children.push_back(std::move(p));
    }
    return e;
  }

  // At '(': arguments into `call`, after `first` (the callee or the filtered value).
  ExprPtr ParseCall(ExprPtr call, ExprPtr first) {
    ExpectOp("(");
    call->children.push_back(std::move(first));
    while (!SkipOp(")")) {
      if (IsOp(Peek(), "*") || IsOp(Peek(), "**")) Fail(Peek(), "*args and **kwargs are not supported");
      if (Peek().kind == TokenKind::kName && IsOp(Peek(1), "=")) {
        std::string key = Next().text;
        Next();
        call->keyword.emplace_back(std::move(key), ParseExpression(true));
      } else {
        if (!call->keyword.empty()) Fail(Peek(), "a positional argument after a keyword argument");
        call->children.push_back(ParseExpression(true));
      }
      if (!IsOp(Peek(), ")")) ExpectOp(",");
    }
    return call;
  }

  ExprPtr ParseFilters(ExprPtr node) {
    while (true) {
      const Token& t = Peek();
      if (IsOp(t, "|")) {
        Next();
        ExprPtr filter = Make(Expr::Kind::kFilter, t.line);
        filter->name = ExpectName();
        while (SkipOp(".")) absl::StrAppend(&filter->name, ".", ExpectName());
        if (IsOp(Peek(), "(")) {
          node = ParseCall(std::move(filter), std::move(node));
        } else {
          filter->children.push_back(std::move(node));
          node = std::move(filter);
        }
      } else if (IsName(t, "is")) {
        Next();
        ExprPtr test = Make(Expr::Kind::kTest, t.line);
        test->negated = SkipName("not");
        test->name = ExpectName();
        while (SkipOp(".")) absl::StrAppend(&test->name, ".", ExpectName());
        const Token& arg = Peek();
        if (IsOp(arg, "(")) {
          node = ParseCall(std::move(test), std::move(node));
        } else {
          test->children.push_back(std::move(node));
          const bool starts = arg.kind == TokenKind::kName || arg.kind == TokenKind::kString ||
                              arg.kind == TokenKind::kInteger || arg.kind == TokenKind::kFloat || IsOp(arg, "[") ||
                              IsOp(arg, "{");
          if (starts && !IsName(arg, "else") && !IsName(arg, "or") && !IsName(arg, "and")) {
            test->children.push_back(ParsePostfix(ParsePrimary()));
          }
          node = std::move(test);
        }
      } else if (IsOp(t, "(")) {
        node = ParseCall(Make(Expr::Kind::kCall, t.line), std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

NodeList Parse(std::string_view source) { return Parser(Tokenize(source)).ParseTemplate(); }

}  // namespace bitfleet::chat::jinja

// Splits a Jinja template into text and the tokens of its tags, applying whitespace control the
// way Jinja's lexer does with the options Hugging Face renders chat templates with
// (trim_blocks and lstrip_blocks on):
//   - `{%-` / `{{-` / `{#-` strip all whitespace before the tag, `-%}` / `-}}` / `-#}` after it;
//   - trim_blocks: the first newline after a block or comment tag is dropped (`+%}` keeps it);
//   - lstrip_blocks: spaces and tabs between the start of a line and a block or comment tag are
//     dropped (`{%+` keeps them).
// Line breaks are read as "\n" and a single one ending the template is dropped, as Jinja does.
// Comments are dropped. Throws JinjaError for an unterminated tag, comment or string.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bitfleet::chat::jinja {

enum class TokenKind {
  kText,           // literal template text (already whitespace-controlled)
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,    // text holds the unescaped value
  kInteger,   // integer holds the value
  kFloat,     // number holds the value
  kOperator,  // text holds the operator: + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } , . : |
  kEnd,
};

struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::string text;
  int64_t integer = 0;
  double number = 0;
  int line = 1;  // 1-based line of the template the token starts on
};

std::vector<Token> Tokenize(std::string_view source);

}  // namespace bitfleet::chat::jinja

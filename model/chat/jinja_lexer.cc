#include "model/chat/jinja_lexer.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "model/chat/jinja_value.h"
#include "model/tokenizer/utf8.h"

namespace bitfleet::chat::jinja {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view RStrip(std::string_view s) {
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(source) {}

  std::vector<Token> Run() {
    bool line_starting = true;  // the previous tag's match ended with a newline (or none yet)
    while (pos_ < src_.size()) {
      const size_t open = FindOpener(pos_);
      std::string_view text = src_.substr(pos_, open - pos_);
      const int text_line = line_;
      CountLines(text);
      if (open == src_.size()) {
        Emit(TokenKind::kText, std::string(text), text_line);
        break;
      }
      const char type = src_[open + 1];  // '{', '%' or '#'
      const char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      Emit(TokenKind::kText, std::string(ControlLeft(text, sign, type != '{', line_starting)), text_line);
      pos_ = open + 2 + (sign == '-' || sign == '+' ? 1 : 0);
      if (type == '#') {
        line_starting = SkipComment();
      } else if (type == '%' && AtRaw()) {
        line_starting = LexRaw();
      } else {
        line_starting = LexTag(type == '{');
      }
    }
    Emit(TokenKind::kEnd, "", line_);
    return std::move(tokens_);
  }

 private:
  // The text before a tag opened with `sign` ('-', '+' or none): `-` strips all whitespace
  // before it; for block and comment tags lstrip_blocks drops the spaces and tabs between the
  // line's start and the tag (`line_starting`: the text began a line).
  static std::string_view ControlLeft(std::string_view text, char sign, bool block, bool line_starting) {
    if (sign == '-') return RStrip(text);
    if (sign == '+' || !block) return text;
    const size_t line_start = text.rfind('\n') + 1;  // npos + 1 == 0
    if (line_start > 0 || line_starting) {
      const std::string_view tail = text.substr(line_start);
      if (!tail.empty() && RStrip(tail).empty()) return text.substr(0, line_start);
    }
    return text;
  }

  // Skips whitespace and then `word` from `*at`; false (and `*at` unchanged) when it is not there.
  bool SkipWord(size_t* at, std::string_view word) const {
    size_t i = *at;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    if (src_.substr(i, word.size()) != word) return false;
    *at = i + word.size();
    return true;
  }

  // After `{%` and its sign: whether the tag is `raw` (a block of literal text).
  bool AtRaw() const {
    size_t at = pos_;
    if (!SkipWord(&at, "raw")) return false;
    size_t close = at;
    return SkipWord(&close, "-%}") || SkipWord(&close, "%}");
  }

  // `{% raw %}...{% endraw %}`: the text between is emitted as it is. As in Jinja, `-` controls
  // whitespace on both tags and the endraw tag takes trim_blocks and lstrip_blocks; the raw tag's
  // `%}` does not take trim_blocks.
  bool LexRaw() {
    SkipWord(&pos_, "raw");
    const size_t open_end = pos_;
    const bool strip = SkipWord(&pos_, "-%}");
    if (!strip) SkipWord(&pos_, "%}");
    CountLines(src_.substr(open_end, pos_ - open_end));
    const bool raw_line_starting = AfterClose(strip, false, true);
    for (size_t from = pos_;;) {
      const size_t open = src_.find("{%", from);
      if (open == std::string_view::npos) Fail("missing {% endraw %}");
      const char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      size_t at = open + 2 + (sign == '-' || sign == '+' ? 1 : 0);
      if (!SkipWord(&at, "endraw")) {
        from = open + 2;
        continue;
      }
      char close_sign = '\0';
      if (SkipWord(&at, "-%}")) {
        close_sign = '-';
      } else if (SkipWord(&at, "+%}")) {
        close_sign = '+';
      } else if (!SkipWord(&at, "%}")) {
        from = open + 2;
        continue;
      }
      const std::string_view data = src_.substr(pos_, open - pos_);
      const int data_line = line_;
      CountLines(src_.substr(pos_, at - pos_));
      Emit(TokenKind::kText, std::string(ControlLeft(data, sign, true, raw_line_starting)), data_line);
      pos_ = at;
      return AfterClose(close_sign == '-', true, close_sign == '+');
    }
  }

  size_t FindOpener(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  void CountLines(std::string_view s) {
    for (char c : s) line_ += c == '\n' ? 1 : 0;
  }

  void Emit(TokenKind kind, std::string text, int line) {
    if (kind == TokenKind::kText && text.empty()) return;
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    t.line = line;
    tokens_.push_back(std::move(t));
  }

  [[noreturn]] void Fail(const std::string& what) const {
    throw JinjaError{absl::StrCat("template line ", line_, ": ", what)};
  }

  // After a closing delimiter at pos_: `-` strips all following whitespace, trim_blocks (for
  // block and comment tags) one newline. Returns whether the consumed text ended with one.
  bool AfterClose(bool strip, bool block, bool keep) {
    const size_t start = pos_;
    if (strip) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
    } else if (block && !keep && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
    CountLines(src_.substr(start, pos_ - start));
    return pos_ > start && src_[pos_ - 1] == '\n';
  }

  bool SkipComment() {
    const int start_line = line_;
    const size_t end = src_.find("#}", pos_);
    if (end == std::string_view::npos) {
      line_ = start_line;
      Fail("unterminated comment");
    }
    const bool strip = end > pos_ && src_[end - 1] == '-';
    const bool keep = end > pos_ && src_[end - 1] == '+';
    CountLines(src_.substr(pos_, end - pos_));
    pos_ = end + 2;
    return AfterClose(strip, true, keep);
  }

  // Lexes a tag's content after its opener; returns whether its closing match ended with a newline.
  bool LexTag(bool variable) {
    Emit(variable ? TokenKind::kVariableBegin : TokenKind::kBlockBegin, "", line_);
    int depth = 0;  // open brackets: a `}` inside a dict literal is not the tag's end
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) {
        line_ += src_[pos_] == '\n' ? 1 : 0;
        ++pos_;
      }
      if (pos_ >= src_.size()) Fail(variable ? "unterminated '{{'" : "unterminated '{%'");
      const std::string_view rest = src_.substr(pos_);
      const std::string_view close = variable ? "}}" : "%}";
      if (depth == 0) {
        for (std::string_view sign : {"-", "+", ""}) {
          if (variable && sign == "+") continue;
          if (rest.substr(0, sign.size()) == sign && rest.substr(sign.size(), 2) == close) {
            pos_ += sign.size() + 2;
            Emit(variable ? TokenKind::kVariableEnd : TokenKind::kBlockEnd, "", line_);
            return AfterClose(sign == "-", !variable, sign == "+");
          }
        }
      }
      const char c = rest[0];
      if (absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t n = 1;
        while (n < rest.size() && (absl::ascii_isalnum(static_cast<unsigned char>(rest[n])) || rest[n] == '_')) ++n;
        Emit(TokenKind::kName, std::string(rest.substr(0, n)), line_);
        pos_ += n;
      } else if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
        LexNumber(rest);
      } else if (c == '\'' || c == '"') {
        LexString(rest);
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (std::string_view two : kTwo) {
          if (rest.substr(0, 2) == two) op = std::string(two);
        }
        if (op.size() == 1 && std::string_view("+-*/%~<>=()[]{},.:|").find(c) == std::string_view::npos) {
          Fail(absl::StrCat("unexpected character '", std::string(1, c), "' in a tag"));
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        Emit(TokenKind::kOperator, op, line_);
        pos_ += op.size();
      }
    }
  }

  void LexNumber(std::string_view rest) {
    size_t n = 0;
    bool is_float = false;
    auto digits = [&] {
      while (n < rest.size() && (absl::ascii_isdigit(static_cast<unsigned char>(rest[n])) || rest[n] == '_')) ++n;
    };
    digits();
    if (n + 1 < rest.size() && rest[n] == '.' && absl::ascii_isdigit(static_cast<unsigned char>(rest[n + 1]))) {
      is_float = true;
      ++n;
      digits();
    }
    if (n < rest.size() && (rest[n] == 'e' || rest[n] == 'E')) {
      size_t m = n + 1;
      if (m < rest.size() && (rest[m] == '+' || rest[m] == '-')) ++m;
      if (m < rest.size() && absl::ascii_isdigit(static_cast<unsigned char>(rest[m]))) {
        is_float = true;
        n = m;
        digits();
      }
    }
    std::string text;
    for (char ch : rest.substr(0, n)) {
      if (ch != '_') text += ch;
    }
    Token t;
    t.line = line_;
    t.text = text;
    if (is_float) {
      t.kind = TokenKind::kFloat;
      t.number = std::strtod(text.c_str(), nullptr);
    } else {
      t.kind = TokenKind::kInteger;
      errno = 0;
      t.integer = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) Fail(absl::StrCat("integer literal ", text, " is out of range"));
    }
    tokens_.push_back(std::move(t));
    pos_ += n;
  }

  // A quoted literal with Python's unicode-escape rules; unknown escapes stay as written.
  void LexString(std::string_view rest) {
    const char quote = rest[0];
    std::string value;
    size_t i = 1;
    const int start_line = line_;
    while (true) {
      if (i >= rest.size()) {
        line_ = start_line;
        Fail("unterminated string literal");
      }
      const char c = rest[i];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\' || i + 1 >= rest.size()) {
        value += c;
        ++i;
        continue;
      }
      const char e = rest[i + 1];
      i += 2;
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case 'a': value += '\a'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '\n': ++line_; break;  // a line continuation
        case 'x':
        case 'u':
        case 'U': {
          const size_t width = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + width > rest.size()) Fail("truncated \\x, \\u or \\U escape in a string literal");
          uint32_t cp = 0;
          for (size_t k = 0; k < width; ++k) {
            const char h = rest[i + k];
            if (!absl::ascii_isxdigit(static_cast<unsigned char>(h))) {
              Fail("truncated \\x, \\u or \\U escape in a string literal");
            }
            cp = cp * 16 + static_cast<uint32_t>(absl::ascii_isdigit(static_cast<unsigned char>(h))
                                                      ? h - '0'
                                                      : absl::ascii_tolower(static_cast<unsigned char>(h)) - 'a' + 10);
          }
          if (cp > 0x10FFFF) Fail("escape past U+10FFFF in a string literal");
          tokenizer::AppendUtf8(cp, &value);
          i += width;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {  // up to three octal digits
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i < rest.size() && rest[i] >= '0' && rest[i] <= '7'; ++k, ++i) {
              cp = cp * 8 + static_cast<uint32_t>(rest[i] - '0');
            }
            tokenizer::AppendUtf8(cp, &value);
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    Token t;
    t.kind = TokenKind::kString;
    t.text = std::move(value);
    t.line = start_line;
    tokens_.push_back(std::move(t));
    pos_ += i + 1;
  }

  std::string_view src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> Tokenize(std::string_view source) {
  // As Jinja reads a template: every line break becomes "\n", and one at the very end is
  // dropped (keep_trailing_newline off).
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  return Lexer(normalized).Run();
}

}  // namespace bitfleet::chat::jinja

#include "model/tokenizer/split_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace bitfleet::tokenizer {
namespace {

// Match state for one thread: a one-pair ovector (only the whole match is read), a match
// context with explicit limits, and a JIT stack that can grow to 8 MiB for long pieces.
// Pattern-independent, so one per thread serves every SplitRegex.
class MatchScratch {
 public:
  MatchScratch() {
    match_data_ = pcre2_match_data_create(1, nullptr);
    context_ = pcre2_match_context_create(nullptr);
    jit_stack_ = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context_ != nullptr) {
      // A piece is at most the whole input; these bound the time one pathological pattern /
      // input pair can take (PCRE2's defaults, stated explicitly).
      pcre2_set_match_limit(context_, 10'000'000);
      pcre2_set_depth_limit(context_, 10'000'000);
      if (jit_stack_ != nullptr) pcre2_jit_stack_assign(context_, nullptr, jit_stack_);
    }
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack_);
    pcre2_match_context_free(context_);
    pcre2_match_data_free(match_data_);
  }
  bool ok() const { return match_data_ != nullptr && context_ != nullptr; }
  pcre2_match_data* match_data() { return match_data_; }
  pcre2_match_context* context() { return context_; }

 private:
  pcre2_match_data* match_data_ = nullptr;
  pcre2_match_context* context_ = nullptr;
  pcre2_jit_stack* jit_stack_ = nullptr;
};

MatchScratch& ThreadScratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? absl::StrCat("PCRE2 error ", code) : std::string(reinterpret_cast<char*>(buffer), n);
}

}  // namespace

StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::Compile(std::string_view pattern) {
  std::unique_ptr<SplitRegex> regex(new SplitRegex());
  regex->pattern_ = std::string(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // DOLLAR_ENDONLY: `$` means the end of the piece only, never "before a final newline"
  // (Rust/Oniguruma semantics, which the reference tokenizers use).
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer regex '", regex->pattern_,
                                                   "': ", Pcre2Message(error_code), " at offset ",
                                                   error_offset));
  }
  regex->code_ = code;
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // else: interpreter
  return regex;
}

SplitRegex::~SplitRegex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

Status SplitRegex::Split(std::string_view text, const std::vector<TextRange>& pieces,
                         std::vector<TextRange>* out) const {
  for (const TextRange& piece : pieces) {
    BF_RETURN_IF_ERROR(SplitOne(text, piece, [out](TextRange r) { out->push_back(r); }));
  }
  return absl::OkStatus();
}

Status SplitRegex::SplitOne(std::string_view text, TextRange piece,
                            absl::FunctionRef<void(TextRange)> sink) const {
  MatchScratch& scratch = ThreadScratch();
  if (!scratch.ok()) return absl::ResourceExhaustedError("pre-tokenizer: out of memory for PCRE2");
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + piece.begin);
  const size_t length = piece.size();
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.match_data());

  size_t pos = 0;   // where the next search starts
  size_t last = 0;  // end of what has been emitted
  while (pos <= length) {
    // The input was validated once up front (Tokenizer::Encode), so skip PCRE2's per-call
    // UTF-8 check, which would make splitting quadratic in the piece length.
    const int rc = jit_ ? pcre2_jit_match(code, subject, length, pos, PCRE2_NO_UTF_CHECK,
                                          scratch.match_data(), scratch.context())
                        : pcre2_match(code, subject, length, pos, PCRE2_NO_UTF_CHECK,
                                      scratch.match_data(), scratch.context());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(absl::StrCat("pre-tokenizer regex '", pattern_,
                                                       "' failed on a ", length,
                                                       "-byte piece: ", Pcre2Message(rc)));
    }
    // rc == 0 means "ovector too small for the capture groups": the whole match is still set.
    const size_t match_begin = ovector[0];
    const size_t match_end = ovector[1];
    if (match_end == match_begin) {  // an empty match splits nothing; step one character
      if (match_begin >= length) break;
      pos = match_begin + 1;
      while (pos < length && (static_cast<uint8_t>(subject[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (match_begin > last) sink({piece.begin + last, piece.begin + match_begin});
    sink({piece.begin + match_begin, piece.begin + match_end});
    last = pos = match_end;
  }
  if (last < length) sink({piece.begin + last, piece.end});
  return absl::OkStatus();
}

}  // namespace bitfleet::tokenizer

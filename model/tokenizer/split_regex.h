// One pre-tokenizer split rule: a PCRE2 pattern compiled with Unicode properties (UTF + UCP)
// and JIT-compiled where the platform supports it. Compiled once, then shared read-only by
// every thread; per-thread match state lives in a thread_local scratch.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "core/status.h"
#include "model/tokenizer/text_range.h"

namespace bitfleet::tokenizer {

class SplitRegex {
 public:
  // Errors name the pattern and PCRE2's message with the offset of the problem.
  static StatusOr<std::unique_ptr<SplitRegex>> Compile(std::string_view pattern);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // Splits every range of `pieces` (ranges of `text`, which must be valid UTF-8) the way a
  // Hugging Face `Split` pre-tokenizer with behaviour "Isolated" does: each match becomes a
  // range and so does each non-empty stretch between matches. The pattern sees one piece at a
  // time, so `$`, lookarounds and anchors stop at the piece's ends. Appends to `out` in order.
  // Fails (ResourceExhausted) only when PCRE2 hits its match or stack limit.
  Status Split(std::string_view text, const std::vector<TextRange>& pieces,
               std::vector<TextRange>* out) const;
  // As above for one piece, handing each resulting range to `sink` as soon as it is found.
  Status SplitOne(std::string_view text, TextRange piece, absl::FunctionRef<void(TextRange)> sink) const;

  const std::string& pattern() const { return pattern_; }

 private:
  SplitRegex() = default;

  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*, kept opaque so PCRE2's header stays out of ours
  bool jit_ = false;
};

}  // namespace bitfleet::tokenizer

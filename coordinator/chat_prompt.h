// Server-side rendering of a Generate request's `chat` messages with the model's ChatML template
// (DESIGN.md §8), the same text `bitfleet run --chat` builds:
//   [<|im_start|>system\n{system}<|im_end|>\n] (<|im_start|>{role}\n{content}<|im_end|>\n)...
//   <|im_start|>assistant\n
// where {system} is the first system message, else the template's default system text (the one
// SmolLM2-style templates write literally), else no system turn.
//
// Encoding keeps clients from forging control tokens: the template's own markers are special
// tokens, message contents never are. When no content contains text that would parse as a
// special token, the whole rendered text is encoded at once (exactly `run --chat`'s tokens);
// otherwise each piece is encoded on its own, contents as plain text.
//
// Immutable after construction; thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "bitfleet/v1/inference.pb.h"
#include "core/status.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {

class ChatPrompt {
 public:
  // From the model's tokenizer.chat_template; null when it is not ChatML (no <|im_start|>).
  static std::unique_ptr<ChatPrompt> FromTemplate(const std::string& chat_template);

  // Renders and encodes `chat`. INVALID_ARGUMENT for no messages, an unknown role, or rendered
  // text over `max_bytes`.
  StatusOr<std::vector<int32_t>> Encode(const v1::ChatMessages& chat, const tokenizer::Tokenizer& tokenizer,
                                        size_t max_bytes) const;

  const std::string& default_system() const { return default_system_; }

 private:
  std::string default_system_;
};

}  // namespace bitfleet::coordinator

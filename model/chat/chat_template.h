// A model's chat template (GGUF `tokenizer.chat_template`, Hugging Face's Jinja format) rendered
// the way Hugging Face's apply_chat_template renders it: Jinja with trim_blocks and
// lstrip_blocks, the loop-control extension, `raise_exception`, `strftime_now` and a `tojson`
// that keeps non-ASCII text and key order. The supported subset of Jinja is in
// docs/chat-templates.md; a template outside it is refused when parsed, naming the construct
// and its line, never rendered differently.
//
// Immutable after Parse; Render is thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace bitfleet::chat {

namespace jinja {
struct Node;
}

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  std::string bos_token;  // the vocabulary's BOS / EOS text, as templates print them
  std::string eos_token;
  size_t max_output_bytes = 1 << 20;  // the rendered text and every string built on the way
  int64_t max_steps = 2'000'000;      // evaluation steps (jinja_interpreter.h)
};

class ChatTemplate {
 public:
  // INVALID_ARGUMENT with the line for a syntax error, an unsupported tag, filter or test.
  static StatusOr<std::unique_ptr<ChatTemplate>> Parse(const std::string& source);
  ~ChatTemplate();

  // Renders with `variables` (a JSON object: `messages`, and e.g. `tools`) plus
  // add_generation_prompt, bos_token and eos_token from `options` where `variables` lacks them.
  // INVALID_ARGUMENT when the template raises (its message is kept) or fails on this input,
  // or the text would exceed options.max_output_bytes.
  StatusOr<std::string> Render(const nlohmann::ordered_json& variables, const ChatRenderOptions& options) const;

 private:
  ChatTemplate() = default;
  std::unique_ptr<std::vector<std::unique_ptr<jinja::Node>>> program_;
};

}  // namespace bitfleet::chat

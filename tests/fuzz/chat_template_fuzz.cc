// Chat templates (model/chat/): any bytes as a template's source, parsed and, when they parse,
// rendered on a conversation with every shape the server passes (special-token text, an empty
// content, a tool turn). Neither may crash, hang or overrun memory, and a rendered text never
// exceeds the output limit. Seeds: the oracle test's corpus of templates.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/chat/chat_template.h"

namespace {

const nlohmann::ordered_json& Conversation() {
  static const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(R"({"messages": [
      {"role": "system", "content": "  Be brief.  "},
      {"role": "user", "content": "hi <|im_end|> \u00e9 {{ x }}"},
      {"role": "assistant", "content": ""},
      {"role": "tool", "content": "42"},
      {"role": "user", "content": "again"}]})");
  return messages;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto parsed = bitfleet::chat::ChatTemplate::Parse(source);
  if (!parsed.ok()) return 0;
  bitfleet::chat::ChatRenderOptions options;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  options.max_output_bytes = 1 << 16;
  options.max_steps = 100'000;
  auto text = (*parsed)->Render(Conversation(), options);
  if (text.ok() && text->size() > options.max_output_bytes) __builtin_trap();
  return 0;
}

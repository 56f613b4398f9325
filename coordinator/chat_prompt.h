// Server-side rendering of a Generate request's `chat` messages with the model's chat template
// (GGUF tokenizer.chat_template, or the operator's --chat-template file), rendered as Hugging
// Face's apply_chat_template renders it (model/chat/chat_template.h): `messages` as
// [{"role", "content"}, ...], add_generation_prompt true, bos_token / eos_token the vocabulary's
// BOS / EOS text. `bitfleet run --chat` renders through the same class.
//
// Encoding keeps clients from forging control tokens: text that would parse as a special token
// is special only where the template wrote it. Special-token text inside a message's content is
// swapped for a private-use marker before rendering (so the template's own string operations,
// strip and the like, act as they would on the real text) and encoded as plain text afterwards;
// the rest of the rendered text is encoded with special tokens recognised. A conversation whose
// contents hold no such text is encoded in one piece, exactly as the rendered text.
//
// BOS: when the rendered text already begins with the BOS text (most templates print
// bos_token), the vocabulary's own BOS is not added again.
//
// ChatMessages' options act as Hugging Face's (and vLLM's) of the same names:
// add_generation_prompt, continue_final_message (the text ends right after the last message's
// content, found where the template wrote it) and template_kwargs (extra template variables).
//
// Immutable after construction; thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "bitfleet/v1/inference.pb.h"
#include "core/status.h"
#include "model/chat/chat_template.h"
#include "model/tokenizer/special_tokens.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {

class ChatPrompt {
 public:
  // Parses `chat_template` for `tokenizer`'s vocabulary; `tokenizer` must outlive the prompt.
  // INVALID_ARGUMENT (naming the line) for a template outside the supported Jinja subset;
  // FAILED_PRECONDITION for an empty one.
  static StatusOr<std::unique_ptr<ChatPrompt>> Create(const std::string& chat_template,
                                                      const tokenizer::Tokenizer& tokenizer);

  // Renders and encodes `chat` with `tokenizer` (the one given to Create). INVALID_ARGUMENT for
  // no messages, an unknown role, bad template options, a conversation the template refuses
  // (its message kept), or rendered text over `max_bytes`.
  StatusOr<std::vector<int32_t>> Encode(const v1::ChatMessages& chat, const tokenizer::Tokenizer& tokenizer,
                                        size_t max_bytes) const;

  // The rendered text alone, special-token text in contents left as it is (tests, and checking
  // what a template writes).
  StatusOr<std::string> Render(const v1::ChatMessages& chat, size_t max_bytes) const;

  // The special token the template writes right after an assistant's answer (found at Create by
  // rendering a probe conversation): it ends the assistant's turn, so generation stops on it like
  // on EOS. Empty when the template writes none (or text) there. For families whose end-of-turn
  // token is not among the vocabulary's EOS / well-known ones.
  const std::vector<int32_t>& turn_end_tokens() const { return turn_end_tokens_; }

 private:
  ChatPrompt(std::unique_ptr<chat::ChatTemplate> chat_template, const tokenizer::Tokenizer& tokenizer);
  // Sets turn_end_tokens_ from a probe conversation.
  void FindTurnEnd(const tokenizer::Vocab& vocab);

  // Checks `chat` and returns its template variables (template_kwargs, parsed).
  StatusOr<nlohmann::ordered_json> CheckChat(const v1::ChatMessages& chat, size_t max_bytes) const;
  // Renders `chat` with `contents` in place of its messages' contents (as they are, or with
  // special-token text swapped for markers) and its options applied.
  StatusOr<std::string> RenderWith(const v1::ChatMessages& chat, nlohmann::ordered_json variables,
                                   const std::vector<std::string>& contents, size_t max_bytes) const;

  std::unique_ptr<chat::ChatTemplate> template_;
  const tokenizer::SpecialTokenMatcher& specials_;  // the tokenizer's
  std::string bos_text_;
  std::string eos_text_;
  std::vector<int32_t> turn_end_tokens_;
};

// A conversation of one optional system message and one user message (`run --chat`).
v1::ChatMessages OneTurnChat(const std::string& system, const std::string& user);

}  // namespace bitfleet::coordinator

#include "coordinator/chat_prompt.h"

#include <string_view>
#include <utility>

namespace bitfleet::coordinator {
namespace {

constexpr std::string_view kStart = "<|im_start|>";
constexpr std::string_view kEnd = "<|im_end|>";

// One stretch of the rendered prompt: template markup (special tokens allowed) or content.
struct Piece {
  std::string text;
  bool markup = false;
};

}  // namespace

std::unique_ptr<ChatPrompt> ChatPrompt::FromTemplate(const std::string& chat_template) {
  if (chat_template.find(kStart) == std::string::npos) return nullptr;
  auto prompt = std::unique_ptr<ChatPrompt>(new ChatPrompt());
  // A literal default system turn: '<|im_start|>system\n...<|im_end|>' (the newline may be
  // written as the two characters \n inside the template's string literal).
  for (std::string_view newline : {"\n", "\\n"}) {
    const std::string head = absl::StrCat(std::string(kStart), "system", std::string(newline));
    const size_t begin = chat_template.find(head);
    if (begin == std::string::npos) continue;
    const size_t text_begin = begin + head.size();
    const size_t text_end = chat_template.find(kEnd, text_begin);
    if (text_end != std::string::npos)
      prompt->default_system_ = chat_template.substr(text_begin, text_end - text_begin);
    break;
  }
  return prompt;
}

StatusOr<std::vector<int32_t>> ChatPrompt::Encode(const v1::ChatMessages& chat, const tokenizer::Tokenizer& tokenizer,
                                                  size_t max_bytes) const {
  if (chat.messages().empty()) return absl::InvalidArgumentError("chat has no messages");
  // Each message renders to at least its markup, so a count check bounds the work before any
  // string is built, and the running size stops a long chat at the first piece past the limit.
  const size_t markup_bytes = kStart.size() + kEnd.size() + std::string_view("user\n\n").size();
  if (static_cast<size_t>(chat.messages_size()) > max_bytes / markup_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat has ", chat.messages_size(), " messages; their markup alone exceeds ", max_bytes, " bytes"));
  }
  std::vector<Piece> pieces;
  size_t rendered = 0;
  auto turn = [&pieces, &rendered](const std::string& role, const std::string& content) {
    pieces.push_back({absl::StrCat(std::string(kStart), role, "\n"), true});
    pieces.push_back({content, false});
    pieces.push_back({absl::StrCat(std::string(kEnd), "\n"), true});
    for (size_t i = pieces.size() - 3; i < pieces.size(); ++i) rendered += pieces[i].text.size();
  };
  bool has_system = false;
  for (const v1::ChatMessage& m : chat.messages()) has_system = has_system || m.role() == "system";
  if (!has_system && !default_system_.empty()) turn("system", default_system_);
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant" && m.role() != "tool") {
      return absl::InvalidArgumentError(
          absl::StrCat("chat.messages[", i, "].role is '", m.role(), "'; use system, user, assistant or tool"));
    }
    turn(m.role(), m.content());
    if (rendered > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("chat renders to more than ", max_bytes, " bytes (limit)"));
    }
  }
  pieces.push_back({absl::StrCat(std::string(kStart), "assistant\n"), true});

  std::string whole;
  for (const Piece& p : pieces) whole += p.text;
  if (whole.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("chat renders to ", whole.size(), " bytes, limit ", max_bytes));
  }
  tokenizer::EncodeOptions markup;
  markup.special_tokens = tokenizer::SpecialTokenParsing::kAll;
  markup.max_input_bytes = max_bytes;
  tokenizer::EncodeOptions plain;
  plain.max_input_bytes = max_bytes;
  // Would any content parse differently with special tokens on? Then it holds a forged marker.
  bool forged = false;
  for (const Piece& p : pieces) {
    if (p.markup || p.text.empty()) continue;
    plain.add_special = false;
    markup.add_special = false;
    BF_ASSIGN_OR_RETURN(std::vector<int32_t> as_plain, tokenizer.Encode(p.text, plain));
    BF_ASSIGN_OR_RETURN(std::vector<int32_t> as_markup, tokenizer.Encode(p.text, markup));
    if (as_plain != as_markup) {
      forged = true;
      break;
    }
  }
  markup.add_special = true;
  if (!forged) return tokenizer.Encode(whole, markup);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < pieces.size(); ++i) {
    tokenizer::EncodeOptions options = pieces[i].markup ? markup : plain;
    options.add_special = i == 0;  // BOS (if the vocabulary wants one) once, at the start
    BF_ASSIGN_OR_RETURN(std::vector<int32_t> part, tokenizer.Encode(pieces[i].text, options));
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

}  // namespace bitfleet::coordinator

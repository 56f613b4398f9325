#include "coordinator/chat_prompt.h"

#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"

namespace bitfleet::coordinator {
namespace {

using OrderedJson = nlohmann::ordered_json;

// A conversation past this many messages per byte of prompt allowance is refused by its count
// before anything is rendered: no template renders a message in fewer bytes.
constexpr size_t kMinBytesPerMessage = 8;

std::string TokenText(const tokenizer::Vocab& vocab, tokenizer::TokenId id) {
  return id >= 0 && static_cast<size_t>(id) < vocab.tokens.size() ? vocab.tokens[static_cast<size_t>(id)] : "";
}

// U+10FFFD - k in UTF-8: the private-use code points markers are made of.
std::string PrivateUse(uint32_t k) {
  const uint32_t cp = 0x10FFFD - k;
  std::string out;
  out += static_cast<char>(0xF0 | (cp >> 18));
  out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
  out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
  out += static_cast<char>(0x80 | (cp & 0x3F));
  return out;
}

}  // namespace

v1::ChatMessages OneTurnChat(const std::string& system, const std::string& user) {
  v1::ChatMessages chat;
  if (!system.empty()) {
    v1::ChatMessage* m = chat.add_messages();
    m->set_role("system");
    m->set_content(system);
  }
  v1::ChatMessage* m = chat.add_messages();
  m->set_role("user");
  m->set_content(user);
  return chat;
}

ChatPrompt::ChatPrompt(std::unique_ptr<chat::ChatTemplate> chat_template, const tokenizer::Vocab& vocab)
    : template_(std::move(chat_template)),
      specials_(vocab),
      bos_text_(TokenText(vocab, vocab.special.bos)),
      eos_text_(TokenText(vocab, vocab.special.eos)) {}

StatusOr<std::unique_ptr<ChatPrompt>> ChatPrompt::Create(const std::string& chat_template,
                                                         const tokenizer::Tokenizer& tokenizer) {
  if (chat_template.empty()) return absl::FailedPreconditionError("the chat template is empty");
  BF_ASSIGN_OR_RETURN(std::unique_ptr<chat::ChatTemplate> parsed, chat::ChatTemplate::Parse(chat_template));
  return std::unique_ptr<ChatPrompt>(new ChatPrompt(std::move(parsed), tokenizer.vocab()));
}

StatusOr<OrderedJson> ChatPrompt::CheckChat(const v1::ChatMessages& chat, size_t max_bytes) const {
  if (chat.messages().empty()) return absl::InvalidArgumentError("chat has no messages");
  if (static_cast<size_t>(chat.messages_size()) > max_bytes / kMinBytesPerMessage) {
    return absl::InvalidArgumentError(absl::StrCat("chat has ", chat.messages_size(), " messages; at most ",
                                                   max_bytes / kMinBytesPerMessage, " fit in the prompt limit of ",
                                                   max_bytes, " bytes"));
  }
  size_t bytes = chat.template_kwargs().size();
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant" && m.role() != "tool") {
      return absl::InvalidArgumentError(
          absl::StrCat("chat.messages[", i, "].role is '", m.role(), "'; use system, user, assistant or tool"));
    }
    bytes += m.content().size();
    if (bytes > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("chat renders to more than ", max_bytes, " bytes (limit)"));
    }
  }
  if (chat.continue_final_message()) {
    if (chat.messages(chat.messages_size() - 1).role() != "assistant") {
      return absl::InvalidArgumentError("continue_final_message needs the last message to be the assistant's");
    }
    if (chat.has_add_generation_prompt() && chat.add_generation_prompt()) {
      return absl::InvalidArgumentError("continue_final_message and add_generation_prompt cannot both be true");
    }
  }
  OrderedJson variables = OrderedJson::object();
  if (!chat.template_kwargs().empty()) {
    variables = OrderedJson::parse(chat.template_kwargs(), nullptr, false);
    if (variables.is_discarded() || !variables.is_object()) {
      return absl::InvalidArgumentError("chat.template_kwargs must be a JSON object");
    }
    for (const char* reserved : {"messages", "add_generation_prompt", "bos_token", "eos_token"}) {
      if (variables.contains(reserved)) {
        return absl::InvalidArgumentError(
            absl::StrCat("chat.template_kwargs cannot set '", reserved, "' (the server sets it)"));
      }
    }
  }
  return variables;
}

StatusOr<std::string> ChatPrompt::RenderWith(const v1::ChatMessages& chat, OrderedJson variables,
                                             const std::vector<std::string>& contents, size_t max_bytes) const {
  OrderedJson messages = OrderedJson::array();
  for (int i = 0; i < chat.messages_size(); ++i) {
    messages.push_back({{"role", chat.messages(i).role()}, {"content", contents[static_cast<size_t>(i)]}});
  }
  variables["messages"] = std::move(messages);
  chat::ChatRenderOptions options;
  options.add_generation_prompt =
      chat.has_add_generation_prompt() ? chat.add_generation_prompt() : !chat.continue_final_message();
  options.bos_token = bos_text_;
  options.eos_token = eos_text_;
  options.max_output_bytes = max_bytes;
  BF_ASSIGN_OR_RETURN(std::string text, template_->Render(variables, options));
  if (!chat.continue_final_message()) return text;
  // As Hugging Face does: the text ends after the last place the final content (else the
  // content without its surrounding whitespace) appears.
  const std::string& final_content = contents.back();
  size_t at = text.rfind(final_content);
  size_t length = final_content.size();
  if (at == std::string::npos) {
    const size_t first = final_content.find_first_not_of(" \t\n\r");
    const size_t last = final_content.find_last_not_of(" \t\n\r");
    const std::string stripped = first == std::string::npos ? "" : final_content.substr(first, last - first + 1);
    at = text.rfind(stripped);
    length = stripped.size();
  }
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(
        "continue_final_message: the chat template does not write the final message's content as it is, so "
        "the prompt cannot end after it");
  }
  text.resize(at + length);
  return text;
}

StatusOr<std::string> ChatPrompt::Render(const v1::ChatMessages& chat, size_t max_bytes) const {
  BF_ASSIGN_OR_RETURN(OrderedJson variables, CheckChat(chat, max_bytes));
  std::vector<std::string> contents;
  for (const v1::ChatMessage& m : chat.messages()) contents.push_back(m.content());
  return RenderWith(chat, std::move(variables), contents, max_bytes);
}

StatusOr<std::vector<int32_t>> ChatPrompt::Encode(const v1::ChatMessages& chat, const tokenizer::Tokenizer& tokenizer,
                                                  size_t max_bytes) const {
  BF_ASSIGN_OR_RETURN(OrderedJson variables, CheckChat(chat, max_bytes));
  // A marker code point no content contains (there are 64 to choose from; a conversation holding
  // all of them is refused rather than encoded unsafely).
  std::string mark;
  for (uint32_t k = 0; k < 64 && mark.empty(); ++k) {
    std::string candidate = PrivateUse(k);
    bool used = false;
    for (const v1::ChatMessage& m : chat.messages()) used = used || m.content().find(candidate) != std::string::npos;
    if (!used) mark = std::move(candidate);
  }
  if (mark.empty()) return absl::InvalidArgumentError("chat contents use every private-use marker code point");

  // Contents with special-token text replaced by mark + index + mark.
  std::vector<std::string> hidden;  // the replaced texts, by index
  std::vector<std::string> contents;
  std::vector<tokenizer::Fragment> fragments;
  for (const v1::ChatMessage& m : chat.messages()) {
    fragments.clear();
    specials_.Partition(m.content(), tokenizer::SpecialTokenParsing::kAll, &fragments);
    std::string content;
    for (const tokenizer::Fragment& f : fragments) {
      const std::string_view text = f.range.Of(m.content());
      if (f.token == tokenizer::kNoToken) {
        content += text;
      } else {
        absl::StrAppend(&content, mark, hidden.size(), mark);
        hidden.emplace_back(text);
      }
    }
    contents.push_back(std::move(content));
  }
  BF_ASSIGN_OR_RETURN(std::string text, RenderWith(chat, std::move(variables), contents, max_bytes));

  tokenizer::EncodeOptions markup;
  markup.special_tokens = tokenizer::SpecialTokenParsing::kAll;
  markup.max_input_bytes = max_bytes;
  // The vocabulary's BOS, unless the template printed it already.
  markup.add_special = bos_text_.empty() || !tokenizer.vocab().add_bos || text.rfind(bos_text_, 0) != 0;
  if (hidden.empty()) return tokenizer.Encode(text, markup);

  tokenizer::EncodeOptions plain;
  plain.add_special = false;
  plain.max_input_bytes = max_bytes;
  std::vector<int32_t> ids;
  const auto append = [&](std::string_view piece, const tokenizer::EncodeOptions& options) -> Status {
    if (piece.empty() && !options.add_special) return absl::OkStatus();
    BF_ASSIGN_OR_RETURN(std::vector<int32_t> part, tokenizer.Encode(piece, options));
    ids.insert(ids.end(), part.begin(), part.end());
    markup.add_special = false;  // BOS once, at the start
    return absl::OkStatus();
  };
  const std::string_view rendered = text;
  size_t pos = 0;
  while (true) {
    const size_t open = rendered.find(mark, pos);
    BF_RETURN_IF_ERROR(append(rendered.substr(pos, open == std::string_view::npos ? open : open - pos), markup));
    if (open == std::string_view::npos) break;
    const size_t digits = open + mark.size();
    const size_t close = rendered.find(mark, digits);
    size_t index = 0;
    bool valid = close != std::string_view::npos && close > digits && close - digits <= 9;
    for (size_t i = digits; valid && i < close; ++i) {
      valid = rendered[i] >= '0' && rendered[i] <= '9';
      index = index * 10 + static_cast<size_t>(rendered[i] - '0');
    }
    if (!valid || index >= hidden.size()) {
      return absl::InvalidArgumentError(
          "the chat template cuts or alters message contents that hold special-token text, so they cannot be "
          "encoded safely; remove the special-token text from the messages");
    }
    BF_RETURN_IF_ERROR(append(hidden[index], plain));
    pos = close + mark.size();
  }
  return ids;
}

}  // namespace bitfleet::coordinator

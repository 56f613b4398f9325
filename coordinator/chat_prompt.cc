#include "coordinator/chat_prompt.h"

#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/tokenizer/utf8.h"

namespace bitfleet::coordinator {
namespace {

using OrderedJson = nlohmann::ordered_json;

// A conversation past this many messages per byte of prompt allowance is refused by its count
// before anything is rendered: no template renders a message in fewer bytes.
constexpr size_t kMinBytesPerMessage = 8;
// template_kwargs nest at most this deep (the template's values allow 64).
constexpr int kMaxKwargsDepth = 32;

std::string TokenText(const tokenizer::Vocab& vocab, tokenizer::TokenId id) {
  return id >= 0 && static_cast<size_t>(id) < vocab.tokens.size() ? vocab.tokens[static_cast<size_t>(id)] : "";
}

// U+10FFFD - k in UTF-8: the private-use code points markers are made of.
std::string PrivateUse(uint32_t k) {
  std::string out;
  tokenizer::AppendUtf8(0x10FFFD - k, &out);
  return out;
}

// Swaps the special-token text in client strings for mark + index + mark, keeping what it
// replaced (by index) for the encoder to put back as plain text.
class Hider {
 public:
  // A mark (a private-use code point) none of `texts` contains; 64 are tried, and strings holding
  // all of them are refused rather than encoded unsafely.
  static StatusOr<Hider> Create(const std::vector<const std::string*>& texts,
                                const tokenizer::SpecialTokenMatcher& specials) {
    for (uint32_t k = 0; k < 64; ++k) {
      std::string candidate = PrivateUse(k);
      bool used = false;
      for (const std::string* t : texts) used = used || t->find(candidate) != std::string::npos;
      if (!used) return Hider(std::move(candidate), specials);
    }
    return absl::InvalidArgumentError("the chat uses every private-use marker code point");
  }

  std::string Hide(const std::string& text) {
    fragments_.clear();
    specials_->Partition(text, tokenizer::SpecialTokenParsing::kAll, &fragments_);
    std::string out;
    for (const tokenizer::Fragment& f : fragments_) {
      const std::string_view piece = f.range.Of(text);
      if (f.token == tokenizer::kNoToken) {
        out += piece;
      } else {
        absl::StrAppend(&out, mark_, hidden_.size(), mark_);
        hidden_.emplace_back(piece);
      }
    }
    return out;
  }

  const std::string& mark() const { return mark_; }
  const std::vector<std::string>& hidden() const { return hidden_; }

 private:
  Hider(std::string mark, const tokenizer::SpecialTokenMatcher& specials)
      : mark_(std::move(mark)), specials_(&specials) {}

  std::string mark_;
  const tokenizer::SpecialTokenMatcher* specials_;
  std::vector<std::string> hidden_;
  std::vector<tokenizer::Fragment> fragments_;
};

// The strings of a JSON value, keys included (template_kwargs: nesting checked in CheckChat).
void CollectStrings(const OrderedJson& j, std::vector<const std::string*>* out) {
  if (j.is_string()) out->push_back(j.get_ptr<const std::string*>());
  if (j.is_object()) {
    for (const auto& [key, item] : j.get_ref<const OrderedJson::object_t&>()) {
      out->push_back(&key);
      CollectStrings(item, out);
    }
  } else if (j.is_array()) {
    for (const auto& item : j) CollectStrings(item, out);
  }
}

// `j` with its strings, keys included, passed through `hider`.
void HideStrings(Hider& hider, OrderedJson* j) {
  if (j->is_string()) {
    *j = hider.Hide(j->get<std::string>());
  } else if (j->is_object()) {
    OrderedJson hidden = OrderedJson::object();
    for (auto& [key, item] : j->items()) {
      HideStrings(hider, &item);
      hidden[hider.Hide(key)] = std::move(item);
    }
    *j = std::move(hidden);
  } else if (j->is_array()) {
    for (auto& item : *j) HideStrings(hider, &item);
  }
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

ChatPrompt::ChatPrompt(std::unique_ptr<chat::ChatTemplate> chat_template, const tokenizer::Tokenizer& tokenizer)
    : template_(std::move(chat_template)),
      specials_(tokenizer.special_tokens()),
      bos_text_(TokenText(tokenizer.vocab(), tokenizer.bos())),
      eos_text_(TokenText(tokenizer.vocab(), tokenizer.eos())) {}

StatusOr<std::unique_ptr<ChatPrompt>> ChatPrompt::Create(const std::string& chat_template,
                                                         const tokenizer::Tokenizer& tokenizer) {
  if (chat_template.empty()) return absl::FailedPreconditionError("the chat template is empty");
  BF_ASSIGN_OR_RETURN(std::unique_ptr<chat::ChatTemplate> parsed, chat::ChatTemplate::Parse(chat_template));
  auto prompt = std::unique_ptr<ChatPrompt>(new ChatPrompt(std::move(parsed), tokenizer));
  prompt->FindTurnEnd(tokenizer.vocab());
  return prompt;
}

void ChatPrompt::FindTurnEnd(const tokenizer::Vocab& vocab) {
  constexpr std::string_view kAnswer = "Probe answer 7f3a";
  // Some templates need a system message first, some refuse one: both are tried.
  for (bool with_system : {false, true}) {
    v1::ChatMessages probe = OneTurnChat(with_system ? "Probe system" : "", "Probe question");
    v1::ChatMessage* answer = probe.add_messages();
    answer->set_role("assistant");
    answer->set_content(std::string(kAnswer));
    probe.set_add_generation_prompt(false);
    StatusOr<std::string> text = Render(probe, 1 << 16);
    if (!text.ok()) continue;
    const size_t at = text->rfind(kAnswer);
    if (at == std::string::npos) return;
    std::vector<tokenizer::Fragment> fragments;
    const std::string_view after = std::string_view(*text).substr(at + kAnswer.size());
    specials_.Partition(after, tokenizer::SpecialTokenParsing::kAll, &fragments);
    for (const tokenizer::Fragment& f : fragments) {
      if (f.token == tokenizer::kNoToken) {
        // Whitespace may come first ("answer\n<|end|>"); any other text means no token ends it.
        if (f.range.Of(after).find_first_not_of(" \t\r\n") != std::string_view::npos) return;
        continue;
      }
      const tokenizer::TokenType type = vocab.types[static_cast<size_t>(f.token)];
      if (type == tokenizer::TokenType::kControl || type == tokenizer::TokenType::kUserDefined) {
        turn_end_tokens_.push_back(f.token);
      }
      return;
    }
    return;
  }
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
    // The parser is iterative; nesting is bounded here so that what walks the value may recurse.
    bool too_deep = false;
    variables = OrderedJson::parse(
        chat.template_kwargs(),
        [&too_deep](int depth, OrderedJson::parse_event_t, OrderedJson&) {
          too_deep = too_deep || depth > kMaxKwargsDepth;
          return !too_deep;
        },
        false);
    if (too_deep) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat.template_kwargs nests deeper than ", kMaxKwargsDepth, " levels"));
    }
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
  // Every client string the template may print: message contents and template_kwargs' strings.
  std::vector<const std::string*> texts;
  for (const v1::ChatMessage& m : chat.messages()) texts.push_back(&m.content());
  CollectStrings(variables, &texts);
  BF_ASSIGN_OR_RETURN(Hider hider, Hider::Create(texts, specials_));
  std::vector<std::string> contents;
  for (const v1::ChatMessage& m : chat.messages()) contents.push_back(hider.Hide(m.content()));
  HideStrings(hider, &variables);
  BF_ASSIGN_OR_RETURN(std::string text, RenderWith(chat, std::move(variables), contents, max_bytes));
  const std::vector<std::string>& hidden = hider.hidden();
  const std::string& mark = hider.mark();

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

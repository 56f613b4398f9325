// `bitfleet chat-template`: renders a conversation with a chat template, exactly as `serve`
// renders chat requests, so a template can be checked before a model is served with it.
//
//   bitfleet chat-template --model M.gguf [--messages FILE] [--tools FILE] [--no-generation-prompt] [--ids]
//   bitfleet chat-template --template FILE [--bos TEXT] [--eos TEXT] [--messages FILE] ...
//   bitfleet chat-template --jsonl FILE
//
// --messages is a JSON array of {"role", "content"} objects ("-" or absent: stdin). --ids prints
// the token ids the server would send instead of the text (and the end-of-turn token). --jsonl
// renders many cases, one JSON object per line ({"template", "messages",
// "add_generation_prompt", "bos_token", "eos_token", "variables"}), and writes one line per
// case, {"text": ...} or {"error": ...}; the differential tests against Python's Jinja use it.
// Exit codes: 0 rendered (--jsonl: every line read), 1 the template or conversation was
// refused (message on stderr), 2 bad flags or unreadable input.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "coordinator/chat_prompt.h"
#include "core/read_file.h"
#include "model/chat/chat_template.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"

namespace bitfleet::tools {
namespace {

using OrderedJson = nlohmann::ordered_json;

struct ChatTemplateFlags {
  std::string model;
  std::string template_file;
  std::string messages = "-";
  std::string tools;
  std::string jsonl;
  std::string bos;
  std::string eos;
  bool no_generation_prompt = false;
  bool ids = false;  // --ids: the token ids the server would send, not the text
};

StatusOr<std::string> ReadText(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  return ReadFileToString(path);
}

StatusOr<OrderedJson> ReadJson(const std::string& path) {
  BF_ASSIGN_OR_RETURN(std::string text, ReadText(path));
  OrderedJson j = OrderedJson::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(path + " is not valid JSON");
  return j;
}

// One --jsonl case rendered to its output line.
OrderedJson RenderCase(const std::string& line) {
  const OrderedJson c = OrderedJson::parse(line, nullptr, false);
  if (c.is_discarded() || !c.is_object() || !c.contains("template") || !c["template"].is_string()) {
    return OrderedJson{{"error", "a case must be a JSON object with a string \"template\""}};
  }
  auto parsed = chat::ChatTemplate::Parse(c["template"].get<std::string>());
  if (!parsed.ok()) return OrderedJson{{"error", std::string(parsed.status().message())}};
  chat::ChatRenderOptions options;
  options.add_generation_prompt = c.value("add_generation_prompt", true);
  options.bos_token = c.value("bos_token", "");
  options.eos_token = c.value("eos_token", "");
  OrderedJson variables = OrderedJson::object();
  if (c.contains("variables") && c["variables"].is_object()) variables = c["variables"];
  variables["messages"] = c.contains("messages") ? c["messages"] : OrderedJson::array();
  auto text = (*parsed)->Render(variables, options);
  if (!text.ok()) return OrderedJson{{"error", std::string(text.status().message())}};
  return OrderedJson{{"text", *text}};
}

// --ids: the conversation encoded as the server encodes it (coordinator/chat_prompt.h: special
// tokens only where the template writes them, BOS once), ids on stdout; the template's end of
// turn on stderr.
int PrintIds(const std::string& source, const tokenizer::Tokenizer& tokenizer, const OrderedJson& messages,
             bool add_generation_prompt) {
  auto prompt = coordinator::ChatPrompt::Create(source, tokenizer);
  if (!prompt.ok()) {
    std::fprintf(stderr, "bitfleet chat-template: %s\n", std::string(prompt.status().message()).c_str());
    return 1;
  }
  v1::ChatMessages chat;
  for (const OrderedJson& m : messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      std::fprintf(stderr, "bitfleet chat-template: --ids needs messages of string role and content\n");
      return 2;
    }
    v1::ChatMessage* added = chat.add_messages();
    added->set_role(m["role"].get<std::string>());
    added->set_content(m["content"].get<std::string>());
  }
  chat.set_add_generation_prompt(add_generation_prompt);
  auto ids = (*prompt)->Encode(chat, tokenizer, tokenizer::kMaxEncodeBytesLimit);
  if (!ids.ok()) {
    std::fprintf(stderr, "bitfleet chat-template: %s\n", std::string(ids.status().message()).c_str());
    return 1;
  }
  for (size_t i = 0; i < ids->size(); ++i) std::printf("%s%d", i > 0 ? " " : "", (*ids)[i]);
  std::printf("\n");
  for (int32_t id : (*prompt)->turn_end_tokens()) {
    std::fprintf(stderr, "end of turn: %s (id %d)\n", tokenizer.vocab().tokens[static_cast<size_t>(id)].c_str(), id);
  }
  return 0;
}

int RunJsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "bitfleet chat-template: cannot read %s\n", path.c_str());
    return 2;
  }
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::printf("%s\n", RenderCase(line).dump(-1, ' ', false, OrderedJson::error_handler_t::replace).c_str());
  }
  return 0;
}

int Run(const ChatTemplateFlags& flags) {
  if (!flags.jsonl.empty()) return RunJsonl(flags.jsonl);
  const auto fail = [](int code, const Status& status) {
    std::fprintf(stderr, "bitfleet chat-template: %s\n", std::string(status.message()).c_str());
    return code;
  };
  std::string source;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;  // with --model
  chat::ChatRenderOptions options;
  options.add_generation_prompt = !flags.no_generation_prompt;
  options.bos_token = flags.bos;
  options.eos_token = flags.eos;
  if (!flags.template_file.empty()) {
    auto text = ReadText(flags.template_file);
    if (!text.ok()) return fail(2, text.status());
    source = *text;
  }
  if (!flags.model.empty()) {
    if (flags.template_file.empty()) {  // else --template replaces the model's, as serve's --chat-template
      auto file = gguf::GgufFile::Open(flags.model);
      if (!file.ok()) return fail(2, file.status());
      auto text = (*file)->GetString("tokenizer.chat_template");
      if (!text.ok()) return fail(1, absl::FailedPreconditionError(flags.model + " has no tokenizer.chat_template"));
      source = *text;
    }
    auto tok = tokenizer::LoadTokenizerFromGguf(flags.model);
    if (!tok.ok()) return fail(2, tok.status());
    tokenizer = std::move(*tok);
    const auto& tokens = tokenizer->vocab().tokens;
    const auto text_of = [&tokens](tokenizer::TokenId id) {
      return id >= 0 && static_cast<size_t>(id) < tokens.size() ? tokens[static_cast<size_t>(id)] : std::string();
    };
    if (flags.bos.empty()) options.bos_token = text_of(tokenizer->bos());
    if (flags.eos.empty()) options.eos_token = text_of(tokenizer->eos());
  }
  auto parsed = chat::ChatTemplate::Parse(source);
  if (!parsed.ok()) return fail(1, parsed.status());
  auto messages = ReadJson(flags.messages);
  if (!messages.ok()) return fail(2, messages.status());
  if (!messages->is_array()) return fail(2, absl::InvalidArgumentError("--messages must hold a JSON array"));
  if (flags.ids) return PrintIds(source, *tokenizer, *messages, options.add_generation_prompt);
  OrderedJson variables = {{"messages", *messages}};
  if (!flags.tools.empty()) {
    auto tools = ReadJson(flags.tools);
    if (!tools.ok()) return fail(2, tools.status());
    variables["tools"] = *tools;
  }
  auto text = (*parsed)->Render(variables, options);
  if (!text.ok()) return fail(1, text.status());
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}

}  // namespace

void RegisterChatTemplate(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ChatTemplateFlags>();
  CLI::App* cmd = app.add_subcommand(
      "chat-template",
      "Render a conversation with a chat template, as serve renders chat requests (to check a template)");
  auto* model = cmd->add_option("--model,-m", flags->model,
                                 "GGUF model: its tokenizer.chat_template (unless --template), BOS and EOS text");
  auto* file = cmd->add_option("--template", flags->template_file,
                               "A Jinja chat template file (with --model: instead of the model's, as serve's "
                               "--chat-template)");
  auto* jsonl = cmd->add_option("--jsonl", flags->jsonl,
                                "Render each line's case ({\"template\", \"messages\", ...}); one JSON result "
                                "per line");
  jsonl->excludes(model)->excludes(file);
  cmd->add_option("--messages", flags->messages, "JSON array of {\"role\", \"content\"} messages ('-': stdin)")
      ->capture_default_str();
  cmd->add_option("--tools", flags->tools, "JSON array passed to the template as `tools`");
  cmd->add_option("--bos", flags->bos, "bos_token text (default: the model's BOS token)");
  cmd->add_option("--eos", flags->eos, "eos_token text (default: the model's EOS token)");
  cmd->add_flag("--no-generation-prompt", flags->no_generation_prompt,
                "add_generation_prompt = false (no opening of the assistant's turn)");
  cmd->add_flag("--ids", flags->ids,
                "Print the token ids the server would send for this conversation (special tokens only where the "
                "template writes them, BOS once) and, on stderr, the token that ends a turn")
      ->needs(model)
      ->excludes("--tools");
  cmd->callback([flags, exit_code] {
    if (flags->model.empty() && flags->template_file.empty() && flags->jsonl.empty()) {
      throw CLI::ValidationError("chat-template", "one of --model, --template or --jsonl is required");
    }
    *exit_code = Run(*flags);
  });
}

}  // namespace bitfleet::tools

// `bitfleet tokenize --model FILE [--no-bos] [--special] [--decode] [--json]`: text on stdin
// -> token ids on stdout (space separated), or with --decode, ids on stdin -> text. The model
// can be any GGUF file with tokenizer metadata, vocab-only files included.
//
//   --no-bos   do not add BOS/EOS even where the vocabulary asks for them
//   --special  encode: recognise special tokens written in the text (<s>, <|eot_id|>, ...);
//              decode: show control tokens as their text instead of hiding them
//   --json     encode: {"ids": [...], "n_tokens": N}; decode: {"text": "..."}
//
// Decode input: integers separated by whitespace and/or commas, optionally in [ ] (so a
// JSON array works). Exit codes: 0 ok, 1 bad model or bad input (message on stderr).
#include <cstdio>
#include <limits>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"

namespace bitfleet::tools {
namespace {

using tokenizer::TokenId;

struct TokenizeFlags {
  std::string model;
  bool no_bos = false;
  bool special = false;
  bool decode = false;
  bool json = false;
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "bitfleet tokenize: %s\n", message.c_str());
  return 1;
}

std::string ReadStdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

bool IsIdSeparator(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']';
}

// Parses "1 2 3", "1,2,3" or "[1, 2, 3]".
StatusOr<std::vector<TokenId>> ParseIds(const std::string& input) {
  std::vector<TokenId> ids;
  size_t pos = 0;
  while (pos < input.size()) {
    if (IsIdSeparator(input[pos])) {
      ++pos;
      continue;
    }
    size_t end = pos;
    while (end < input.size() && !IsIdSeparator(input[end])) ++end;
    const std::string number = input.substr(pos, end - pos);
    long long value = 0;
    try {
      size_t used = 0;
      value = std::stoll(number, &used);
      if (used != number.size()) throw std::invalid_argument(number);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError("not a token id: '" + number.substr(0, 40) + "'");
    }
    if (value < std::numeric_limits<TokenId>::min() || value > std::numeric_limits<TokenId>::max()) {
      return absl::InvalidArgumentError("token id out of range: " + number);
    }
    ids.push_back(static_cast<TokenId>(value));
    pos = end;
  }
  return ids;
}

int RunTokenize(const TokenizeFlags& flags) {
  auto tok = tokenizer::LoadTokenizerFromGguf(flags.model);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  const std::string input = ReadStdin();

  if (flags.decode) {
    auto ids = ParseIds(input);
    if (!ids.ok()) return Fail(std::string(ids.status().message()));
    auto text = (*tok)->Decode(*ids, {.render_special = flags.special});
    if (!text.ok()) return Fail(std::string(text.status().message()));
    if (flags.json) {
      const nlohmann::json out = {{"text", *text}};
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      std::cout << *text;
    }
    return 0;
  }

  tokenizer::EncodeOptions options;
  options.add_special = !flags.no_bos;
  options.special_tokens =
      flags.special ? tokenizer::SpecialTokenParsing::kAll : tokenizer::SpecialTokenParsing::kNone;
  auto ids = (*tok)->Encode(input, options);
  if (!ids.ok()) return Fail(std::string(ids.status().message()));
  if (flags.json) {
    const nlohmann::json out = {{"ids", *ids}, {"n_tokens", ids->size()}};
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::string line;
  for (size_t i = 0; i < ids->size(); ++i) {
    if (i > 0) line.push_back(' ');
    line += std::to_string((*ids)[i]);
  }
  std::cout << line << "\n";
  return 0;
}

}  // namespace

void RegisterTokenize(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Text on stdin -> token ids (or ids -> text with --decode)");
  cmd->add_option("--model", flags->model, "GGUF file with tokenizer metadata (vocab-only files work)")->required();
  cmd->add_flag("--no-bos", flags->no_bos, "Do not add BOS/EOS even where the vocabulary asks for them");
  cmd->add_flag("--special", flags->special,
                "Encode: recognise special tokens in the text; decode: show control tokens");
  cmd->add_flag("--decode", flags->decode, "Read token ids (space/comma separated or a JSON array) and print text");
  cmd->add_flag("--json", flags->json, "Print JSON: {\"ids\": [...], \"n_tokens\": N} or {\"text\": \"...\"}");
  cmd->callback([flags, exit_code] { *exit_code = RunTokenize(*flags); });
}

}  // namespace bitfleet::tools

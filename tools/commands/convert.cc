// `bitfleet convert --from llama2c CHECKPOINT --tokenizer TOKENIZER -o OUT.gguf [--type f32|f16]`:
// converts a llama2.c checkpoint into a llama-arch GGUF file (docs/models.md). The result is
// re-read and validated before the command reports success.
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>

#include "CLI/CLI.hpp"
#include "core/dtype.h"
#include "model/convert/llama2c.h"
#include "tools/commands/commands.h"
#include "tools/commands/progress.h"

namespace bitfleet::tools {
namespace {

struct ConvertFlags {
  std::string from = "llama2c";
  std::string checkpoint;
  std::string tokenizer;
  std::string output;
  std::string type = "f32";
  std::string name;
};

int RunConvert(const ConvertFlags& flags) {
  convert::Llama2cOptions options;
  options.weight_type = flags.type == "f16" ? DType::kF16 : DType::kF32;
  options.name = flags.name;
  Status status = convert::ConvertLlama2cFile(flags.checkpoint, flags.tokenizer, flags.output, options,
                                              TerminalProgress("convert"));
  if (!status.ok()) {
    std::fprintf(stderr, "bitfleet convert: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::printf("wrote %s\n", flags.output.c_str());
  return 0;
}

}  // namespace

void RegisterConvert(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ConvertFlags>();
  CLI::App* cmd = app.add_subcommand("convert", "Convert a llama2.c checkpoint to a llama-arch GGUF file");
  cmd->add_option("--from", flags->from, "Source format")
      ->check(CLI::IsMember({"llama2c"}))
      ->capture_default_str();
  cmd->add_option("checkpoint", flags->checkpoint, "llama2.c checkpoint (version 0 / legacy layout)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", flags->tokenizer, "llama2.c tokenizer file (tokenizer.bin)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", flags->output, "Output GGUF file")->required();
  cmd->add_option("--type", flags->type, "Type of the 2-D weights (norms stay f32)")
      ->check(CLI::IsMember({"f32", "f16"}))
      ->capture_default_str();
  cmd->add_option("--name", flags->name, "general.name (default: the checkpoint's file stem)");
  cmd->callback([flags, exit_code] { *exit_code = RunConvert(*flags); });
}

}  // namespace bitfleet::tools

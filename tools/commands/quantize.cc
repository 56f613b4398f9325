// `bitfleet quantize IN OUT --type TYPE`: rewrites a model's weight matrices in another type
// (norms stay F32; rows that do not fit the type's blocks fall back to F16 per tensor).
#include <unistd.h>

#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "model/quantize/quantize_model.h"
#include "model/quantize/type_policy.h"
#include "tools/commands/commands.h"
#include "tools/commands/progress.h"

namespace bitfleet::tools {
namespace {

struct QuantizeFlags {
  std::string input;
  std::string output;
  std::string type;
  std::string embedding_type;  // a type, "keep", or empty (policy default)
};

int RunQuantize(const QuantizeFlags& flags) {
  auto log = Logger("quantize");
  quantize::QuantizeOptions options;
  options.type = *quantize::ParseWeightType(flags.type);  // validated while parsing
  if (flags.embedding_type == "keep") {
    options.keep_embeddings = true;
  } else if (!flags.embedding_type.empty()) {
    options.embedding_type = *quantize::ParseWeightType(flags.embedding_type);
  }
  StatusOr<quantize::QuantizeSummary> summary =
      quantize::QuantizeModel(flags.input, flags.output, options, TerminalProgress("quantize"));
  if (!summary.ok()) {
    log->error("{}", std::string(summary.status().message()));
    return summary.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

}  // namespace

void RegisterQuantize(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "quantize", "Convert a GGUF model's weight matrices to another type (norms stay f32; output written atomically)");
  cmd->add_option("input", flags->input, "Input GGUF model")->required()->check(CLI::ExistingFile);
  cmd->add_option("output", flags->output, "Output GGUF file (must differ from the input)")->required();
  auto type_check = CLI::Validator(
      [](std::string& s) -> std::string {
        auto t = quantize::ParseWeightType(s);
        return t.ok() ? std::string() : std::string(t.status().message());
      },
      "TYPE");
  cmd->add_option("--type", flags->type, "Weight matrix type: " + quantize::WeightTypeList())
      ->required()
      ->check(type_check);
  cmd->add_option("--embedding-type", flags->embedding_type,
                  "token_embd/output: a type, or 'keep' for the input's (default: --type, or q8_0 when --type is "
                  "ternary)")
      ->check(CLI::Validator(
          [type_check](std::string& s) -> std::string { return s == "keep" ? std::string() : type_check(s); },
          "TYPE|keep"));
  cmd->callback([flags, exit_code] { *exit_code = RunQuantize(*flags); });
}

}  // namespace bitfleet::tools

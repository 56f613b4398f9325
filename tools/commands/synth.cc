// `bitfleet synth`: writes a seeded random model (llama or bitnet) of a preset shape in any
// weight type, with a tokenizer, so every other command can run without downloading a model.
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "model/quantize/type_policy.h"
#include "model/synth/presets.h"
#include "model/synth/synth.h"
#include "tools/commands/commands.h"
#include "tools/commands/progress.h"

namespace bitfleet::tools {
namespace {

struct SynthFlags {
  std::string arch = "bitnet";
  std::string preset = "tiny";
  std::string type;  // default: tq2_0 for bitnet, f16 for llama
  std::string embedding_type;
  std::string activation;
  std::string name;
  uint64_t seed = 0;
  std::string output;
  std::optional<uint32_t> n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
  std::optional<float> rope_base, rms_eps;
};

// Validator that accepts a string when `parse` does; the error is the parser's message.
template <typename Parse>
CLI::Validator StatusValidator(Parse parse, const std::string& name) {
  return CLI::Validator(
      [parse](std::string& value) -> std::string {
        auto parsed = parse(value);
        return parsed.ok() ? std::string() : std::string(parsed.status().message());
      },
      name);
}

int RunSynth(const SynthFlags& flags) {
  auto log = Logger("synth");
  // The validators already accepted these names.
  const synth::ArchChoice arch = *synth::ParseSynthArch(flags.arch);
  const synth::Preset preset = *synth::ParsePreset(flags.preset);
  synth::SynthOptions options;
  options.config = synth::PresetConfig(arch, preset);
  options.preset = synth::PresetName(preset);
  options.seed = flags.seed;
  const std::string type_name = !flags.type.empty() ? flags.type : arch.arch == model::Arch::kBitnet ? "tq2_0" : "f16";
  options.type = *quantize::ParseWeightType(type_name);
  if (!flags.embedding_type.empty()) options.embedding_type = *quantize::ParseWeightType(flags.embedding_type);

  model::ModelConfig& c = options.config;
  if (flags.n_embd) c.n_embd = *flags.n_embd;
  if (flags.n_layer) c.n_layer = *flags.n_layer;
  if (flags.n_head) c.n_head = *flags.n_head;
  if (flags.n_head_kv) c.n_head_kv = *flags.n_head_kv;
  if (flags.n_ff) c.n_ff = *flags.n_ff;
  if (flags.n_vocab) c.n_vocab = *flags.n_vocab;
  if (flags.n_ctx) c.n_ctx_train = *flags.n_ctx;
  if (flags.rope_base) c.rope_freq_base = *flags.rope_base;
  if (flags.rms_eps) c.rms_eps = *flags.rms_eps;
  if (c.n_head != 0) c.head_dim = c.n_embd / c.n_head;
  c.rope_dim = c.head_dim;
  if (!flags.activation.empty()) {
    const std::string before = c.arch_name;
    if (synth::SetActivation(c, *model::ParseActivation(flags.activation))) {
      log->info("--activation {}: writing architecture '{}' instead of '{}' (bitnet.cpp picks the activation "
                "from the name)",
                flags.activation, c.arch_name, before);
    } else if (c.arch == model::Arch::kLlama && c.activation != model::Activation::kSilu) {
      log->warn("llama with {}: llama.cpp ignores llama.feed_forward_activation, so only bitfleet runs this file "
                "as intended",
                flags.activation);
    }
  }
  if (!flags.name.empty()) c.name = flags.name;

  StatusOr<synth::SynthSummary> summary = synth::SynthesizeModel(options, flags.output, TerminalProgress("synth"));
  if (!summary.ok()) {
    log->error("{}", std::string(summary.status().message()));
    return summary.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

}  // namespace

void RegisterSynth(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<SynthFlags>();
  CLI::App* cmd = app.add_subcommand(
      "synth", "Write a random model (seeded, identical on every machine) with a tokenizer, for tests and benchmarks");
  cmd->add_option("-o,--output", flags->output, "Output GGUF file")->required();
  cmd->add_option("--arch", flags->arch,
                  "llama | bitnet (SiLU, as 1bitLLM) | bitnet-b1.58 (squared ReLU, as 2B4T) | qwen2 (Q/K/V biases)")
      ->capture_default_str()
      ->check(StatusValidator([](const std::string& s) { return synth::ParseSynthArch(s); }, "ARCH"));
  cmd->add_option("--preset", flags->preset,
                  "tiny (tests) | small (~100M) | medium (BitNet b1.58-large shape) | large (BitNet b1.58 2B4T shape)")
      ->capture_default_str()
      ->check(StatusValidator([](const std::string& s) { return synth::ParsePreset(s); }, "PRESET"));
  cmd->add_option("--type", flags->type,
                  "Weight matrix type: " + quantize::WeightTypeList() + " (default: tq2_0 for bitnet, f16 for llama)")
      ->check(StatusValidator([](const std::string& s) { return quantize::ParseWeightType(s); }, "TYPE"));
  cmd->add_option("--embedding-type", flags->embedding_type,
                  "Type of token_embd/output (default: --type, or q8_0 when --type is ternary)")
      ->check(StatusValidator([](const std::string& s) { return quantize::ParseWeightType(s); }, "TYPE"));
  cmd->add_option("--seed", flags->seed, "Random seed")->capture_default_str();
  cmd->add_option("--n-embd", flags->n_embd, "Override: embedding width");
  cmd->add_option("--n-layer", flags->n_layer, "Override: number of layers");
  cmd->add_option("--n-head", flags->n_head, "Override: attention heads");
  cmd->add_option("--n-head-kv", flags->n_head_kv, "Override: key/value heads");
  cmd->add_option("--n-ff", flags->n_ff, "Override: feed-forward width");
  cmd->add_option("--n-vocab", flags->n_vocab, "Override: vocabulary size (>= 259)");
  cmd->add_option("--n-ctx", flags->n_ctx, "Override: training context length");
  cmd->add_option("--rope-base", flags->rope_base, "Override: RoPE frequency base");
  cmd->add_option("--rms-eps", flags->rms_eps, "Override: RMSNorm epsilon");
  cmd->add_option("--activation", flags->activation, "Override: FFN activation, silu | relu2")
      ->check(StatusValidator([](const std::string& s) { return model::ParseActivation(s); }, "ACT"));
  cmd->add_option("--name", flags->name, "Override: general.name");
  cmd->callback([flags, exit_code] { *exit_code = RunSynth(*flags); });
}

}  // namespace bitfleet::tools

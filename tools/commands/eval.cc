// `bitfleet eval`: perplexity of a model on a text file, and with --reference the KL
// divergence and top-1 agreement against a reference model (e.g. the f16 original of a
// quantized file), as llama.cpp's perplexity tool defines them (worker/perplexity.h).
// Prints one JSON object on stdout; progress goes to stderr. Under `mpirun -np N` the ranks
// score as one tensor-parallel group (whole logit rows gathered) and rank 0 prints. With
// --target instead of -m, the same perplexity of a served model (eval_served.h).
#include <cstdio>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "core/read_file.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "tools/commands/eval_served.h"
#include "worker/perplexity.h"

namespace bitfleet::tools {
namespace {

struct EvalFlags {
  std::string model;
  std::string target;
  int concurrency = 8;
  double wait_ready_s = 0;
  ClientSecurity security;
  std::string reference;
  std::string text_file;
  int ctx = 512;
  int chunks = 0;
  int threads = 0;
  bool score_all = false;
  PlacementFlags placement;
};

Status RunEval(const EvalFlags& flags) {
  if (flags.model.empty() == flags.target.empty()) {
    return absl::InvalidArgumentError("give a model file (-m) or a server (--target), not both");
  }
  if (!flags.target.empty()) {
    if (!flags.reference.empty()) {
      return absl::InvalidArgumentError("--reference needs the logits of both models: use -m, not --target");
    }
    ServedEvalOptions served;
    served.target = flags.target;
    served.text_file = flags.text_file;
    served.perplexity.ctx = flags.ctx;
    served.perplexity.score_all = flags.score_all;
    served.perplexity.max_chunks = flags.chunks;
    served.concurrency = flags.concurrency;
    served.wait_ready_s = flags.wait_ready_s;
    served.security = flags.security;
    return RunServedEval(served);
  }
  auto log = Logger("eval");
  BF_ASSIGN_OR_RETURN(std::string text, ReadFileToString(flags.text_file));
  worker::RunnerOptions options;
  options.threads = flags.threads > 0 ? flags.threads : DefaultThreads();
  options.max_context = flags.ctx;
  options.max_step_sequences = 1;
  options.max_step_tokens = std::min(flags.ctx, 512);
  options.max_logit_rows = options.max_step_tokens;
  options.gather_logits = true;  // whole rows on every rank (TP)
  if (flags.ctx < 2) return absl::InvalidArgumentError("--ctx must be >= 2");
  BF_ASSIGN_OR_RETURN(LoadedModel model, LoadModel(flags.model, options, /*with_tokenizer=*/true, flags.placement));
  LoadedModel reference;
  if (!flags.reference.empty()) {
    // The reference keeps an f16 KV cache: `--kv-type int8 --reference <the same file>` measures
    // what the int8 cache costs.
    PlacementFlags reference_placement = flags.placement;
    reference_placement.kv_type = cache::KvType::kF16;
    BF_ASSIGN_OR_RETURN(reference,
                        LoadModel(flags.reference, options, /*with_tokenizer=*/false, reference_placement));
  }
  const bool primary = IsPrimaryRank();
  tokenizer::EncodeOptions encode;
  encode.max_input_bytes = tokenizer::kMaxEncodeBytesLimit;
  BF_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, model.tokenizer->Encode(text, encode));

  worker::PerplexityOptions ppl;
  ppl.ctx = flags.ctx;
  ppl.score_all = flags.score_all;
  ppl.max_chunks = flags.chunks;
  if (model.tokenizer->vocab().add_bos) ppl.bos = model.tokenizer->bos();
  log->info("{} tokens, {} chunks of {}, scoring {} of each chunk", tokens.size(), tokens.size() / flags.ctx,
            flags.ctx, flags.score_all ? "every prediction" : "the second half");
  auto progress = [&log, primary](int done, int total, const worker::EvalSummary& s) {
    if (!primary) return;
    if (s.has_reference) {
      log->info("chunk {}/{}: ppl {:.4f}, mean KLD {:.6f}, top-1 {:.2f}%", done, total, s.perplexity, s.kld_mean,
                100 * s.top1_agreement);
    } else {
      log->info("chunk {}/{}: ppl {:.4f}", done, total, s.perplexity);
    }
  };
  BF_ASSIGN_OR_RETURN(worker::EvalSummary s, worker::EvaluatePerplexity(*model.runner, reference.runner.get(),
                                                                           tokens, ppl, progress));
  if (!primary) return absl::OkStatus();
  nlohmann::json out = {
      {"model", flags.model},
      {"kv_type", cache::KvTypeName(flags.placement.kv_type)},
      {"text", flags.text_file},
      {"tp", model.runner->tp_size()},
      {"ctx", flags.ctx},
      {"chunks", static_cast<int64_t>(flags.chunks > 0 ? std::min<size_t>(flags.chunks, tokens.size() / flags.ctx)
                                                        : tokens.size() / flags.ctx)},
      {"scored_tokens", s.tokens},
      {"scoring", flags.score_all ? "all" : "second_half"},
      {"perplexity", s.perplexity},
      {"nll_mean", s.nll_mean},
  };
  if (s.has_reference) {
    out["reference"] = flags.reference;
    out["reference_perplexity"] = s.reference_perplexity;
    out["kld_mean"] = s.kld_mean;
    out["kld_median"] = s.kld_median;
    out["kld_p99"] = s.kld_p99;
    out["kld_max"] = s.kld_max;
    out["top1_agreement"] = s.top1_agreement;
  }
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterEval(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Perplexity on a text file; with --reference also KL divergence and top-1 agreement (JSON on stdout)");
  cmd->add_option("-m,--model", flags->model, "GGUF model file");
  cmd->add_option("--target", flags->target,
                  "Instead of -m: a bitfleet server (host:port) whose served model is scored through its gRPC API, "
                  "with the same chunks, so the figure compares with -m's");
  cmd->add_option("--concurrency", flags->concurrency, "With --target: chunks in flight at once")
      ->capture_default_str();
  cmd->add_option("--wait-ready", flags->wait_ready_s, "With --target: first wait up to this many seconds for SERVING");
  AddClientSecurityFlags(*cmd, &flags->security);
  cmd->add_option("--text", flags->text_file, "Text file to score")->required();
  cmd->add_option("--reference", flags->reference,
                  "Reference GGUF model (same vocabulary) for KL divergence; it runs with an f16 KV cache, so the "
                  "model file itself with --kv-type int8 measures the int8 cache");
  cmd->add_option("-c,--ctx", flags->ctx, "Tokens per chunk")->capture_default_str();
  cmd->add_option("--chunks", flags->chunks, "Evaluate at most this many chunks (0: all)")->capture_default_str();
  cmd->add_flag("--score-all", flags->score_all,
                "Score every prediction of a chunk (default: the second half, as llama.cpp)");
  cmd->add_option("-t,--threads", flags->threads, "Threads (default: all hardware threads)");
  AddPlacementFlags(cmd, &flags->placement);
  cmd->callback([flags, exit_code] {
    const Status status = RunEval(*flags);
    *exit_code = status.ok() ? 0 : ReportError("eval", status);
  });
}

}  // namespace bitfleet::tools

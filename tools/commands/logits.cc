// `bitfleet logits`: one teacher-forced pass over given token ids, writing the raw float32
// logits of every position (n_tokens × n_vocab, row-major, little-endian) — the format other
// tools compare against (e.g. logits dumped from llama.cpp or a Python reference). Under
// `mpirun -np N` the ranks compute their vocabulary slices, gather whole rows, and rank 0 writes.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cache/block_pool.h"
#include "core/logging.h"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "worker/sequence_session.h"

namespace bitfleet::tools {
namespace {

struct LogitsFlags {
  std::string model;
  std::string tokens;
  std::string tokens_file;
  std::string out;
  int threads = 0;
  int chunk = 0;
  PlacementFlags placement;
};

StatusOr<std::vector<int32_t>> ReadTokens(const LogitsFlags& flags) {
  if (flags.tokens_file.empty()) return ParseTokenList(flags.tokens);
  std::ifstream in(flags.tokens_file);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", flags.tokens_file));
  std::stringstream text;
  text << in.rdbuf();
  return ParseTokenList(text.str());
}

Status WriteLogits(const std::string& path, const std::vector<float>& logits) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  const size_t written = std::fwrite(logits.data(), sizeof(float), logits.size(), f);
  const bool closed = std::fclose(f) == 0;
  if (written != logits.size() || !closed) return absl::DataLossError(absl::StrCat("short write to ", path));
  return absl::OkStatus();
}

Status RunLogits(const LogitsFlags& flags) {
  BF_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ReadTokens(flags));
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens given");
  worker::RunnerOptions options;
  options.threads = flags.threads > 0 ? flags.threads : DefaultThreads();
  options.max_context = static_cast<int>(tokens.size());
  options.max_step_sequences = 1;
  const int chunk = flags.chunk > 0 ? flags.chunk : 512;
  options.max_step_tokens = std::min(chunk, options.max_context);
  options.max_logit_rows = options.max_step_tokens;
  options.gather_logits = true;  // whole rows on every rank (TP)
  BF_ASSIGN_OR_RETURN(LoadedModel model, LoadModel(flags.model, options, /*with_tokenizer=*/false, flags.placement));
  cache::BlockPool pool(model.runner->kv_blocks());
  worker::SequenceSession session(*model.runner, pool);
  std::vector<float> logits;
  BF_RETURN_IF_ERROR(session.AppendAll(tokens, &logits));
  if (!IsPrimaryRank()) return absl::OkStatus();
  BF_RETURN_IF_ERROR(WriteLogits(flags.out, logits));
  Logger("logits")->info("wrote {} x {} float32 logits to {}", tokens.size(), model.runner->n_vocab(), flags.out);
  return absl::OkStatus();
}

}  // namespace

void RegisterLogits(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<LogitsFlags>();
  CLI::App* cmd = app.add_subcommand(
      "logits", "Teacher-forced pass over token ids; writes raw float32 logits (n_tokens x n_vocab, row-major)");
  cmd->add_option("-m,--model", flags->model, "GGUF model file")->required();
  auto* tokens = cmd->add_option("--tokens", flags->tokens, "Token ids, e.g. 1,450,2");
  auto* file = cmd->add_option("--tokens-file", flags->tokens_file, "File of token ids (commas or whitespace)");
  tokens->excludes(file);
  cmd->add_option("-o,--out", flags->out, "Output file (.f32)")->required();
  cmd->add_option("-t,--threads", flags->threads, "Threads (default: all hardware threads)");
  cmd->add_option("--chunk", flags->chunk, "Tokens per forward step (default 512)");
  AddPlacementFlags(cmd, &flags->placement);
  cmd->callback([flags, exit_code, tokens, file] {
    if (tokens->count() == 0 && file->count() == 0) {
      *exit_code = ReportError("logits", absl::InvalidArgumentError("give --tokens or --tokens-file"));
      return;
    }
    const Status status = RunLogits(*flags);
    *exit_code = status.ok() ? 0 : ReportError("logits", status);
  });
}

}  // namespace bitfleet::tools

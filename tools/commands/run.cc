// `bitfleet run`: generate text from a prompt on this machine (CPU kernels). Streams the
// completion to stdout as it is produced (whole UTF-8 characters only) and prints prompt and
// generation speed to stderr. Under `mpirun -np N` the N processes are one tensor-parallel
// group: each holds a shard, all step and sample together (DistributedSampler), rank 0 prints.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "cache/block_pool.h"
#include "core/logging.h"
#include "core/read_file.h"
#include "model/tokenizer/incremental_decoder.h"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "tools/commands/logit_bias_flag.h"
#include "worker/distributed_sampling.h"
#include "worker/sampler.h"
#include "worker/sequence_session.h"

namespace bitfleet::tools {
namespace {

struct RunFlags {
  std::string model;
  std::string prompt;
  std::string system;
  std::string chat_template;  // --chat-template FILE
  int n_predict = 128;
  int threads = 0;
  int ctx = 0;
  bool chat = false;
  bool echo = false;
  bool ignore_eos = false;
  worker::SamplingParams sampling;
  std::vector<std::string> logit_bias;  // --logit-bias entries
  PlacementFlags placement;
};

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// The prompt's ids; with --chat, `turn_end` gets the token the template ends a turn with.
StatusOr<std::vector<int32_t>> EncodePrompt(const RunFlags& flags, const LoadedModel& model,
                                            std::vector<int32_t>* turn_end) {
  std::vector<int32_t> ids;
  if (flags.chat) {
    std::string chat_template;
    if (!flags.chat_template.empty()) {
      BF_ASSIGN_OR_RETURN(chat_template, ReadFileToString(flags.chat_template));
    } else {
      auto from_model = model.file->GetString("tokenizer.chat_template");
      if (!from_model.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("--chat needs a chat template (the model has none: give --chat-template FILE): ",
                         std::string(from_model.status().message())));
      }
      chat_template = *from_model;
    }
    // The server's rendering and encoding of the same conversation (coordinator/chat_prompt.h).
    BF_ASSIGN_OR_RETURN(ids, EncodeChat(chat_template, *model.tokenizer, flags.system, flags.prompt, turn_end));
  } else {
    BF_ASSIGN_OR_RETURN(ids, model.tokenizer->Encode(flags.prompt));
  }
  if (ids.empty()) {
    if (model.tokenizer->bos() == tokenizer::kNoToken) {
      return absl::InvalidArgumentError("empty prompt and the vocabulary has no BOS token to start from");
    }
    ids.push_back(model.tokenizer->bos());
  }
  return ids;
}

Status Run(RunFlags flags) {
  auto log = Logger("run");
  BF_ASSIGN_OR_RETURN(auto biases, ParseLogitBias(flags.logit_bias));
  for (const auto& [token, bias] : biases) flags.sampling.logit_bias.push_back({token, bias});
  BF_RETURN_IF_ERROR(worker::ValidateSamplingParams(flags.sampling));
  if (flags.n_predict < 0) return absl::InvalidArgumentError("-n must be >= 0");
  worker::RunnerOptions options;
  options.threads = flags.threads > 0 ? flags.threads : DefaultThreads();
  options.max_context = flags.ctx;
  options.max_step_sequences = 1;
  options.max_logit_rows = 1;
  BF_ASSIGN_OR_RETURN(LoadedModel model, LoadModel(flags.model, options, /*with_tokenizer=*/true, flags.placement));
  worker::StepRunner& runner = *model.runner;
  const int ctx = runner.options().max_context;
  std::vector<int32_t> turn_end;  // as the server, generation also ends at the template's end of turn
  BF_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, EncodePrompt(flags, model, &turn_end));
  if (static_cast<int>(prompt.size()) >= ctx) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt has ", prompt.size(), " tokens; the context holds ", ctx, " (raise --ctx)"));
  }
  if (static_cast<int>(prompt.size()) + flags.n_predict > ctx) {
    log->warn("prompt ({} tokens) + -n {} exceeds the context of {}: generation stops when it is full", prompt.size(),
              flags.n_predict, ctx);
  }

  const bool primary = IsPrimaryRank();
  cache::BlockPool pool(runner.kv_blocks());
  worker::SequenceSession session(runner, pool);
  BF_RETURN_IF_ERROR(worker::ValidateSamplingParams(flags.sampling, runner.n_vocab()));
  worker::Sampler sampler(runner.n_vocab());
  // Under TP each rank holds its vocabulary slice of the logits: sample collectively. Every
  // rank seeds the same Rng, so all draw the same numbers and pick the same tokens.
  std::unique_ptr<worker::DistributedSampler> distributed;
  if (!runner.logits_whole()) {
    const sharding::Range slice = runner.vocab_slice();
    distributed = std::make_unique<worker::DistributedSampler>(
        runner.communicator(), runner.n_vocab(), static_cast<int32_t>(slice.begin), static_cast<int32_t>(slice.size()));
  }
  worker::Rng rng(flags.sampling.seed);
  // A continuation keeps its leading space; from an empty prompt the vocab's rule applies.
  tokenizer::DecodeOptions decode;
  if (!flags.prompt.empty() || flags.chat) decode.strip_leading_space = false;
  tokenizer::IncrementalDecoder stream(*model.tokenizer, decode);
  if (flags.echo && primary) {
    std::fputs(flags.prompt.c_str(), stdout);
    std::fflush(stdout);
  }

  const Clock::time_point t0 = Clock::now();
  BF_ASSIGN_OR_RETURN(std::span<const float> logits, session.Append(prompt));
  const Clock::time_point t1 = Clock::now();
  std::vector<int32_t> history = prompt;
  history.reserve(prompt.size() + flags.n_predict);
  int generated = 0;
  int decode_steps = 0;
  const char* stop = "length";
  while (generated < flags.n_predict) {
    int32_t token = 0;
    if (distributed != nullptr) {
      BF_ASSIGN_OR_RETURN(token, distributed->Sample(logits, history, flags.sampling, rng));
    } else {
      token = sampler.Sample(logits, history, flags.sampling, rng);
    }
    const bool ends_turn = std::find(turn_end.begin(), turn_end.end(), token) != turn_end.end();
    if (!flags.ignore_eos && (model.tokenizer->IsEndOfGeneration(token) || ends_turn)) {
      stop = "end of generation";
      break;
    }
    history.push_back(token);
    ++generated;
    BF_ASSIGN_OR_RETURN(std::string piece, stream.Push(token));
    if (primary) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    if (generated == flags.n_predict) break;
    if (session.position() >= ctx) {
      stop = "context full";
      break;
    }
    BF_ASSIGN_OR_RETURN(logits, session.Append(std::span<const int32_t>(&token, 1)));
    ++decode_steps;
  }
  const Clock::time_point t2 = Clock::now();
  const std::string tail = stream.Finish();
  if (!primary) return absl::OkStatus();
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);

  const double prompt_s = Seconds(t0, t1);
  const double gen_s = Seconds(t1, t2);
  std::fprintf(stderr, "\nprompt: %zu tokens in %.3f s (%.2f tok/s)\n", prompt.size(), prompt_s,
               prompt_s > 0 ? prompt.size() / prompt_s : 0.0);
  // Compute threads matter on the CPU only (the CUDA runner resolves them to 1).
  const std::string where = runner.options().device == worker::RunnerDevice::kCpu
                                ? absl::StrCat(runner.options().threads, " threads, ", runner.kernel_variant())
                                : runner.kernel_variant();
  std::fprintf(stderr, "generation: %d tokens, %d decode steps in %.3f s (%.2f tok/s); stop: %s; %s\n", generated,
               decode_steps, gen_s, gen_s > 0 ? decode_steps / gen_s : 0.0, stop, where.c_str());
  if (runner.tp_size() > 1) {
    std::fprintf(stderr, "tensor parallel: %d ranks (%s), %.3f s of rank 0's time in collectives\n",
                 runner.tp_size(), runner.communicator().backend(), runner.communicator().seconds_in_collectives());
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterRun(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<RunFlags>();
  // Interactive defaults as llama.cpp's: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05.
  flags->sampling.temperature = 0.8f;
  flags->sampling.top_k = 40;
  flags->sampling.top_p = 0.95f;
  flags->sampling.min_p = 0.05f;
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt on this machine (streams to stdout)");
  cmd->add_option("-m,--model", flags->model, "GGUF model file")->required();
  cmd->add_option("-p,--prompt", flags->prompt, "Prompt text (empty: start from BOS)");
  cmd->add_option("-n,--n-predict", flags->n_predict, "Tokens to generate")->capture_default_str();
  cmd->add_flag("--chat", flags->chat,
                "Send the prompt as a user message, rendered with the model's chat template (tokenizer.chat_template) "
                "as serve renders chat requests");
  cmd->add_option("--chat-template", flags->chat_template,
                  "Jinja chat template file for --chat instead of the model's")
      ->check(CLI::ExistingFile);
  cmd->add_option("--system", flags->system, "System message for --chat (none: the template's default, if it has one)");
  cmd->add_option("--temp", flags->sampling.temperature, "Temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", flags->sampling.top_k, "Top-k (0: off)")->capture_default_str();
  cmd->add_option("--top-p", flags->sampling.top_p, "Top-p (1: off)")->capture_default_str();
  cmd->add_option("--min-p", flags->sampling.min_p, "Min-p (0: off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", flags->sampling.repeat_penalty, "Repetition penalty (1: off)")
      ->capture_default_str();
  cmd->add_option("--presence-penalty", flags->sampling.presence_penalty, "Presence penalty (0: off)")
      ->capture_default_str();
  cmd->add_option("--frequency-penalty", flags->sampling.frequency_penalty, "Frequency penalty (0: off)")
      ->capture_default_str();
  cmd->add_option("--repeat-last-n", flags->sampling.penalty_last_n, "Penalty window in tokens (0: off, -1: all)")
      ->capture_default_str();
  cmd->add_option("-s,--seed", flags->sampling.seed, "Sampling seed (same seed, same text)")->capture_default_str();
  AddLogitBiasFlag(*cmd, &flags->logit_bias);
  cmd->add_option("-t,--threads", flags->threads, "Threads (default: all hardware threads)");
  cmd->add_option("-c,--ctx", flags->ctx, "Context length in tokens (default: the model's)");
  cmd->add_flag("--echo", flags->echo, "Print the prompt before the completion");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating after an end-of-generation token");
  AddPlacementFlags(cmd, &flags->placement);
  cmd->callback([flags, exit_code] {
    const Status status = Run(*flags);
    *exit_code = status.ok() ? 0 : ReportError("run", status);
  });
}

}  // namespace bitfleet::tools

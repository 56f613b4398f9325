// `bitfleet generate`: a streaming client of bitfleet.v1.Inference/Generate (with --interactive, a
// conversation read from stdin, one message per line). Prints the text as
// it arrives on stdout (or, with --tokens, the generated token ids on one line at the end; with
// --logprobs N, one JSON line per generated token with its log probability and the N most
// likely tokens') and a summary on stderr. Failures print the gRPC status code and message; exit 2 for a bad
// request (INVALID_ARGUMENT, NOT_FOUND), 1 for anything else.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bitfleet/v1/inference.grpc.pb.h"
#include "coordinator/chat_prompt.h"
#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "tools/commands/grpc_client.h"
#include "tools/commands/response_format_flags.h"
#include "tools/commands/logit_bias_flag.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct GenerateFlags {
  std::string target = "127.0.0.1:50051";
  std::string model;
  std::string prompt;
  std::string prompt_tokens;
  bool chat = false;
  ResponseFormatFlags format;
  std::string system;
  std::string prefill;  // --prefill: the answer's beginning (continue_final_message)
  bool interactive = false;  // --interactive: a conversation from stdin
  uint32_t max_tokens = 128;
  float temperature = 0, top_p = 1, min_p = 0, repeat_penalty = 1, presence_penalty = 0, frequency_penalty = 0;
  int32_t top_k = 0, penalty_last_n = 64;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool tokens = false;
  int logprobs = -1;  // -1: off; else the alternatives per token
  double timeout_s = 0;
  double wait_ready_s = 0;
  ClientSecurity security;
  std::vector<std::string> logit_bias;  // --logit-bias entries
  // Which sampling flags were given (the others take the server's defaults).
  std::vector<std::pair<CLI::Option*, std::function<void(v1::SamplingParams*)>>> sampling_options;
};

// --logprobs: one JSON object per generated token on stdout (bytes that are not UTF-8, part of
// a character split over tokens, print as U+FFFD).
void PrintLogprobs(const std::vector<int32_t>& ids, const std::vector<v1::TokenLogprobs>& logprobs) {
  for (size_t i = 0; i < std::min(ids.size(), logprobs.size()); ++i) {
    nlohmann::json line;
    line["id"] = ids[i];
    line["token"] = logprobs[i].token();
    line["logprob"] = logprobs[i].logprob();
    line["top"] = nlohmann::json::array();
    for (const v1::TopLogprob& top : logprobs[i].top()) {
      line["top"].push_back({{"id", top.token_id()}, {"token", top.token()}, {"logprob", top.logprob()}});
    }
    std::printf("%s\n", line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
}

// The request the flags describe: its input from --prompt, --prompt-tokens or --chat (with
// --interactive, a chat whose messages the conversation fills in).
StatusOr<v1::GenerateRequest> BuildRequest(const GenerateFlags& flags) {
  v1::GenerateRequest request;
  request.set_model(flags.model);
  if (flags.interactive) {
    request.mutable_chat();
  } else if (!flags.prompt_tokens.empty()) {
    BF_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseTokenList(flags.prompt_tokens));
    request.mutable_prompt_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
  } else if (flags.chat) {
    // The server renders the conversation with the model's chat template.
    *request.mutable_chat() = coordinator::OneTurnChat(flags.system, flags.prompt);
    if (!flags.prefill.empty()) {
      v1::ChatMessage* answer = request.mutable_chat()->add_messages();
      answer->set_role("assistant");
      answer->set_content(flags.prefill);
      request.mutable_chat()->set_continue_final_message(true);
    }
  } else {
    request.set_prompt(flags.prompt);
  }
  request.set_max_tokens(flags.max_tokens);
  BF_ASSIGN_OR_RETURN(const v1::GenerateRequest format, ResponseFormatRequest(flags.format));
  request.MergeFrom(format);
  BF_ASSIGN_OR_RETURN(auto biases, ParseLogitBias(flags.logit_bias));
  for (const auto& [token, bias] : biases) (*request.mutable_sampling()->mutable_logit_bias())[token] = bias;
  for (const auto& [option, apply] : flags.sampling_options) {
    if (option->count() > 0) apply(request.mutable_sampling());
  }
  for (const std::string& stop : flags.stop) request.add_stop(stop);
  request.set_ignore_eos(flags.ignore_eos);
  if (flags.logprobs >= 0) {
    request.set_logprobs(true);
    request.set_top_logprobs(static_cast<uint32_t>(flags.logprobs));
  }
  return request;
}

// One Generate call: the text streams to stdout as it comes (or, with --tokens / --logprobs,
// the ids / JSON lines at the end), the summary goes to stderr; returns the generated text.
StatusOr<std::string> Stream(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                             const GenerateFlags& flags) {
  const bool print_text = !flags.tokens && flags.logprobs < 0;
  grpc::ClientContext context;
  AddApiKey(context, flags.security);
  if (flags.timeout_s > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::duration_cast<std::chrono::system_clock::duration>(
                             std::chrono::duration<double>(flags.timeout_s)));
  }
  const Clock::time_point start = Clock::now();
  std::optional<Clock::time_point> first_token;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  std::string text;
  std::vector<int32_t> ids;
  std::vector<v1::TokenLogprobs> logprobs;
  v1::GenerateResponse last;
  while (reader->Read(&response)) {
    if (!first_token && response.token_ids_size() > 0) first_token = Clock::now();
    ids.insert(ids.end(), response.token_ids().begin(), response.token_ids().end());
    logprobs.insert(logprobs.end(), response.logprobs().begin(), response.logprobs().end());
    text += response.text();
    if (print_text && !response.text().empty()) {
      std::fwrite(response.text().data(), 1, response.text().size(), stdout);
      std::fflush(stdout);
    }
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = response;
  }
  const grpc::Status status = reader->Finish();
  if (flags.logprobs >= 0) {
    PrintLogprobs(ids, logprobs);
    std::fflush(stdout);
  } else {
    if (flags.tokens) {
      for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  if (!status.ok()) {
    return Status(coordinator::StatusCodeFromInt(status.error_code()),
                  absl::StrCat(DescribeGrpcStatus(status), " (after ", ids.size(), " tokens)"));
  }
  const double total = std::chrono::duration<double>(Clock::now() - start).count();
  const double ttft = first_token ? std::chrono::duration<double>(*first_token - start).count() : 0.0;
  const v1::Usage& usage = last.usage();
  std::fprintf(stderr,
               "finish: %s; %u prompt tokens (%u cached), %u generated; first token %.3f s, total %.3f s; seed %llu\n",
               v1::FinishReason_Name(last.finish_reason()).c_str(), usage.prompt_tokens(), usage.cached_prompt_tokens(),
               usage.completion_tokens(), ttft, total, static_cast<unsigned long long>(usage.seed()));
  return text;
}

// --interactive: a conversation read from stdin, one user message per line, each answer
// streamed and kept in the history the next request sends (the server's prefix cache makes the
// repeated history cheap). "/reset" forgets the conversation, "/system TEXT" starts a new one
// with that system message, "/exit" or the end of input ends. A refused turn is reported and
// left out of the history.
Status Converse(v1::Inference::Stub& stub, const GenerateFlags& flags) {
  BF_ASSIGN_OR_RETURN(v1::GenerateRequest request, BuildRequest(flags));
  {  // A server that serves no chats says so (and why) before anything is typed.
    grpc::ClientContext context;
    AddApiKey(context, flags.security);
    v1::ModelInfo info;
    const grpc::Status status = stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) {
      return Status(coordinator::StatusCodeFromInt(status.error_code()), DescribeGrpcStatus(status));
    }
    if (!info.chat()) return absl::FailedPreconditionError(info.chat_unavailable());
  }
  const bool terminal = isatty(STDIN_FILENO) != 0;
  std::string system = flags.system;
  v1::ChatMessages history = coordinator::OneTurnChat(system, "");
  history.mutable_messages()->RemoveLast();  // the system message alone, if any
  if (terminal) {
    std::fprintf(stderr, "Chat with %s: one message per line; /reset, /system TEXT, /exit (or Ctrl-D).\n",
                 flags.target.c_str());
  }
  std::string line = flags.prompt;  // a first message given with --prompt
  bool have_line = !line.empty();
  while (true) {
    if (!have_line) {
      if (terminal) std::fputs("> ", stderr);
      if (!std::getline(std::cin, line)) break;
    }
    have_line = false;
    if (line == "/exit") break;
    if (line == "/reset" || line.rfind("/system ", 0) == 0) {
      if (line != "/reset") system = line.substr(std::string("/system ").size());
      history = coordinator::OneTurnChat(system, "");
      history.mutable_messages()->RemoveLast();
      continue;
    }
    if (line.empty()) continue;
    *request.mutable_chat() = history;
    v1::ChatMessage* user = request.mutable_chat()->add_messages();
    user->set_role("user");
    user->set_content(line);
    StatusOr<std::string> answer = Stream(stub, request, flags);
    if (!answer.ok()) {
      std::fprintf(stderr, "bitfleet generate: %s\n", std::string(answer.status().message()).c_str());
      continue;
    }
    *history.add_messages() = *user;
    v1::ChatMessage* reply = history.add_messages();
    reply->set_role("assistant");
    reply->set_content(*answer);
  }
  return absl::OkStatus();
}

Status Generate(const GenerateFlags& flags) {
  BF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      OpenChannel(flags.target, flags.security, flags.wait_ready_s));
  auto stub = v1::Inference::NewStub(channel);
  if (flags.interactive) return Converse(*stub, flags);
  BF_ASSIGN_OR_RETURN(const v1::GenerateRequest request, BuildRequest(flags));
  if (!flags.tokens && flags.logprobs < 0 && !flags.prefill.empty()) {
    std::fwrite(flags.prefill.data(), 1, flags.prefill.size(), stdout);
  }
  return Stream(*stub, request, flags).status();
}

template <typename T>
void AddSampling(CLI::App& cmd, GenerateFlags& flags, const std::string& name, T* value, const std::string& help,
                 void (v1::SamplingParams::*set)(T)) {
  CLI::Option* option = cmd.add_option(name, *value, help);
  flags.sampling_options.emplace_back(option, [value, set](v1::SamplingParams* p) { (p->*set)(*value); });
}

}  // namespace

void RegisterGenerate(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Stream a completion from a bitfleet server (gRPC client)");
  cmd->add_option("--target", flags->target, "Server address (host:port)")->capture_default_str();
  cmd->add_option("--model", flags->model, "Model name (default: the served model)");
  AddClientSecurityFlags(*cmd, &flags->security);
  auto* prompt = cmd->add_option("-p,--prompt", flags->prompt, "Prompt text");
  auto* ids = cmd->add_option("--prompt-tokens", flags->prompt_tokens, "Prompt as token ids (\"1,2,3\")");
  prompt->excludes(ids);
  auto* chat = cmd->add_flag("--chat", flags->chat,
                "Send the prompt as a user message; the server applies the model's chat template");
  cmd->add_option("--system", flags->system, "System message for --chat (default: the template's own, if any)");
  auto* prefill = cmd->add_option("--prefill", flags->prefill,
                  "With --chat: the answer's beginning, which the model continues (continue_final_message); printed "
                  "before the continuation")
      ->needs(chat);
  auto* interactive = cmd->add_flag(
      "-i,--interactive", flags->interactive,
      "Chat: one user message per line of stdin, each answer streamed and kept in the conversation the "
      "next message is sent with (--prompt: the first message; /reset, /system TEXT, /exit)");
  interactive->excludes(ids)->excludes(prefill);
  cmd->add_option("-n,--max-tokens", flags->max_tokens, "Tokens to generate (0: until the context is full)")
      ->capture_default_str();
  GenerateFlags& f = *flags;
  AddSampling(*cmd, f, "--temp", &f.temperature, "Temperature (0: greedy; default: the server's, 1.0)",
              &v1::SamplingParams::set_temperature);
  AddSampling(*cmd, f, "--top-k", &f.top_k, "Top-k (0: off)", &v1::SamplingParams::set_top_k);
  AddSampling(*cmd, f, "--top-p", &f.top_p, "Top-p (1: off)", &v1::SamplingParams::set_top_p);
  AddSampling(*cmd, f, "--min-p", &f.min_p, "Min-p (0: off)", &v1::SamplingParams::set_min_p);
  AddSampling(*cmd, f, "--repeat-penalty", &f.repeat_penalty, "Repetition penalty (1: off)",
              &v1::SamplingParams::set_repeat_penalty);
  AddSampling(*cmd, f, "--presence-penalty", &f.presence_penalty, "Presence penalty (0: off)",
              &v1::SamplingParams::set_presence_penalty);
  AddSampling(*cmd, f, "--frequency-penalty", &f.frequency_penalty, "Frequency penalty (0: off)",
              &v1::SamplingParams::set_frequency_penalty);
  AddSampling(*cmd, f, "--repeat-last-n", &f.penalty_last_n, "Penalty window (0: off, -1: all)",
              &v1::SamplingParams::set_penalty_last_n);
  AddSampling(*cmd, f, "-s,--seed", &f.seed, "Sampling seed (default: chosen by the server)",
              &v1::SamplingParams::set_seed);
  AddLogitBiasFlag(*cmd, &flags->logit_bias);
  AddResponseFormatFlags(*cmd, &flags->format);
  cmd->add_option("--stop", flags->stop, "Stop string (repeatable); not included in the output");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating after an end-of-generation token");
  auto* tokens = cmd->add_flag("--tokens", flags->tokens, "Print the generated token ids instead of the text");
  cmd->add_option("--logprobs", flags->logprobs,
                  "Print, instead of the text, one JSON line per generated token: {\"id\", \"token\", "
                  "\"logprob\", \"top\": [N most likely: {\"id\", \"token\", \"logprob\"}]} (the model's "
                  "natural-log probabilities, before sampling's penalties and filters); N in 0..20")
      ->check(CLI::Range(0, 20))
      ->excludes(tokens)
      ->excludes(interactive);
  tokens->excludes(interactive);
  cmd->add_option("--timeout", flags->timeout_s, "Deadline for the whole call in seconds (0: none)");
  cmd->add_option("--wait-ready", flags->wait_ready_s, "First wait up to this many seconds for health SERVING");
  cmd->callback([flags, exit_code] {
    const Status status = Generate(*flags);
    *exit_code = status.ok() ? 0 : ReportError("generate", status);
  });
}

}  // namespace bitfleet::tools

// `bitfleet bench serve`: a load generator against a bitfleet server. C client threads each keep
// one Generate stream open until N requests are done: a closed loop (each stream sends its next
// request when the last one ends) or, with --request-rate R, an open one: request i arrives at a
// fixed time of a Poisson process of rate R (exponential gaps, from --seed) and is sent then, or
// when a stream frees up if all C are busy (its wait before sending is reported apart from its
// TTFT, which runs from the send). Prompts are token ids
// (exact lengths): an optional shared prefix of P tokens (the agent-workload case: one long
// system prompt, many streams) followed by per-request random tokens; generation runs greedy
// with ignore_eos so every request produces exactly G tokens. With --prompt-logprobs every
// request also scores its prompt (lm-eval's requests; with --shared-prefix, its multiple-choice
// ones); with --json it asks for one JSON object, with --json-schema F for a value of the
// schema in F (and may then end before G tokens). With --prompt-file every request sends that
// text instead (raw, or with --chat as one user message) and ends at the model's end of
// generation or G tokens: a real workload's decode, the case for --speculative-tokens. Prints one
// JSON object.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bitfleet/v1/inference.grpc.pb.h"
#include "coordinator/chat_prompt.h"
#include "grpcpp/client_context.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"
#include "tools/commands/grpc_client.h"
#include "tools/commands/response_format_flags.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchServeFlags {
  std::string target = "127.0.0.1:50051";
  int concurrency = 1;
  int requests = 0;  // 0: 4 per client
  int prompt_len = 128;
  int gen_len = 64;
  int shared_prefix = 0;
  uint64_t seed = 1;
  double request_rate = 0;  // requests/s of the Poisson arrivals; 0: closed loop
  int logprobs = -1;        // -1: off; else every request asks for logprobs with this many alternatives
  int prompt_logprobs = -1;  // -1: off; else every request scores its prompt with this many alternatives
  std::string prompt_file;  // "": generated token prompts
  bool chat = false;        // --prompt-file's text as one user message
  std::string prompt_text;  // --prompt-file's contents, read once
  ResponseFormatFlags format;            // what every request asks for
  v1::GenerateRequest format_request;  // its fields, the schema file read once
  double wait_ready_s = 60;
  ClientSecurity security;
};

struct RequestStats {
  bool ok = false;
  std::string error;
  double ttft_s = 0;
  double total_s = 0;
  std::vector<double> itl_s;  // gaps between consecutive tokens
  uint32_t prompt_tokens = 0;
  uint32_t cached_tokens = 0;
  uint32_t completion_tokens = 0;
  double send_delay_s = 0;  // open loop: from the request's arrival to its send
};

// splitmix64: deterministic prompts for a given --seed on every machine.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Token ids avoid the low ids where vocabularies keep their special tokens.
std::vector<int32_t> MakePrompt(const BenchServeFlags& f, uint32_t vocab, int index) {
  const uint32_t lo = std::min<uint32_t>(vocab - 1, 300);
  const uint32_t span = vocab - lo;
  std::vector<int32_t> ids(f.prompt_len);
  for (int i = 0; i < f.prompt_len; ++i) {
    const bool shared = i < f.shared_prefix;
    const uint64_t key = shared ? Mix(f.seed * 1000003 + i) : Mix(Mix(f.seed + 7919 * (index + 1)) + i);
    ids[i] = static_cast<int32_t>(lo + key % span);
  }
  return ids;
}

RequestStats RunOne(v1::Inference::Stub& stub, const BenchServeFlags& f, uint32_t vocab, int index) {
  RequestStats out;
  v1::GenerateRequest request;
  if (f.prompt_file.empty()) {
    const std::vector<int32_t> prompt = MakePrompt(f, vocab, index);
    request.mutable_prompt_tokens()->mutable_ids()->Add(prompt.begin(), prompt.end());
  } else if (f.chat) {
    *request.mutable_chat() = coordinator::OneTurnChat("", f.prompt_text);
  } else {
    request.set_prompt(f.prompt_text);
  }
  request.set_max_tokens(f.gen_len);
  request.set_ignore_eos(!f.format.constrained() && f.prompt_file.empty());
  request.MergeFrom(f.format_request);
  request.mutable_sampling()->set_temperature(0);
  if (f.logprobs >= 0) {
    request.set_logprobs(true);
    request.set_top_logprobs(static_cast<uint32_t>(f.logprobs));
  }
  if (f.prompt_logprobs >= 0) {
    request.set_prompt_logprobs(true);
    request.set_top_logprobs(static_cast<uint32_t>(f.prompt_logprobs));
  }
  grpc::ClientContext context;
  AddApiKey(context, f.security);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  const Clock::time_point start = Clock::now();
  Clock::time_point last = start;
  bool first = true;
  uint32_t logprob_entries = 0;
  uint32_t prompt_logprob_entries = 0;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    logprob_entries += static_cast<uint32_t>(response.logprobs_size());
    prompt_logprob_entries += static_cast<uint32_t>(response.prompt_logprobs_size());
    if (response.token_ids_size() == 0 && !response.has_usage()) continue;
    const Clock::time_point now = Clock::now();
    if (response.token_ids_size() > 0) {
      if (first) {
        out.ttft_s = std::chrono::duration<double>(now - start).count();
        first = false;
      } else {
        out.itl_s.push_back(std::chrono::duration<double>(now - last).count() / response.token_ids_size());
      }
      last = now;
    }
    if (response.has_usage()) {
      out.prompt_tokens = response.usage().prompt_tokens();
      out.cached_tokens = response.usage().cached_prompt_tokens();
      out.completion_tokens = response.usage().completion_tokens();
    }
  }
  const grpc::Status status = reader->Finish();
  out.total_s = std::chrono::duration<double>(Clock::now() - start).count();
  out.ok = status.ok();
  if (!status.ok()) out.error = DescribeGrpcStatus(status);
  if (out.ok && f.logprobs >= 0 && logprob_entries != out.completion_tokens) {
    out.ok = false;
    out.error = absl::StrCat(logprob_entries, " logprobs entries for ", out.completion_tokens, " tokens");
  }
  if (out.ok && f.prompt_logprobs >= 0 && prompt_logprob_entries + 1 != out.prompt_tokens) {
    out.ok = false;
    out.error = absl::StrCat(prompt_logprob_entries, " prompt_logprobs entries for ", out.prompt_tokens,
                             " prompt tokens");
  }
  return out;
}

// Open loop: request i's arrival time in seconds from the start, a Poisson process of `rate`
// (exponential gaps by inversion of splitmix64 uniforms, so the same --seed gives the same times).
std::vector<double> ArrivalTimes(uint64_t seed, double rate, int n) {
  std::vector<double> at(n);
  double t = 0;
  for (int i = 0; i < n; ++i) {
    // A uniform in (0, 1]: 53 random bits, plus one so that log never sees 0.
    const double u = (static_cast<double>(Mix(seed * 0x2545f4914f6cdd1dull + i) >> 11) + 1.0) * 0x1.0p-53;
    t += -std::log(u) / rate;
    at[i] = t;
  }
  return at;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

int RunBenchServe(const BenchServeFlags& f) {
  auto credentials = ChannelCredentialsFor(f.security);
  if (!credentials.ok()) {
    std::fprintf(stderr, "bitfleet bench serve: %s\n", std::string(credentials.status().message()).c_str());
    return 1;
  }
  auto channel = WaitForServing(f.target, f.wait_ready_s, *credentials);
  if (!channel.ok()) {
    std::fprintf(stderr, "bitfleet bench serve: %s\n", std::string(channel.status().message()).c_str());
    return 1;
  }
  auto stub = v1::Inference::NewStub(*channel);
  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    AddApiKey(context, f.security);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) {
      std::fprintf(stderr, "bitfleet bench serve: GetModelInfo: %s\n", DescribeGrpcStatus(status).c_str());
      return 1;
    }
  }
  if (f.prompt_file.empty() && static_cast<uint64_t>(f.prompt_len) + f.gen_len > info.context_length()) {
    std::fprintf(stderr, "bitfleet bench serve: --prompt-len + --gen-len (%d) exceeds the served context (%u)\n",
                 f.prompt_len + f.gen_len, info.context_length());
    return 2;
  }
  const int n_requests = f.requests > 0 ? f.requests : 4 * f.concurrency;
  std::vector<RequestStats> stats(n_requests);
  const bool open_loop = f.request_rate > 0;
  const std::vector<double> arrivals = open_loop ? ArrivalTimes(f.seed, f.request_rate, n_requests)
                                                 : std::vector<double>();
  std::atomic<int> next{0};
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < f.concurrency; ++c) {
    clients.emplace_back([&] {
      // Requests are taken in arrival order, so a free stream always sends the earliest waiting.
      for (int i = next.fetch_add(1); i < n_requests; i = next.fetch_add(1)) {
        double delay = 0;
        if (open_loop) {
          const Clock::time_point arrival =
              start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrivals[i]));
          std::this_thread::sleep_until(arrival);
          delay = std::chrono::duration<double>(Clock::now() - arrival).count();
        }
        stats[i] = RunOne(*stub, f, info.vocab_size(), i);
        stats[i].send_delay_s = delay;
      }
    });
  }
  for (auto& t : clients) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> ttft, ttft_hit, ttft_cold, itl, send_delay;
  uint64_t out_tokens = 0, prompt_tokens = 0, cached_tokens = 0;
  int errors = 0;
  std::string first_error;
  for (const RequestStats& s : stats) {
    if (!s.ok) {
      if (errors++ == 0) first_error = s.error;
      continue;
    }
    ttft.push_back(s.ttft_s);
    (s.cached_tokens > 0 ? ttft_hit : ttft_cold).push_back(s.ttft_s);
    itl.insert(itl.end(), s.itl_s.begin(), s.itl_s.end());
    send_delay.push_back(s.send_delay_s);
    out_tokens += s.completion_tokens;
    prompt_tokens += s.prompt_tokens;
    cached_tokens += s.cached_tokens;
  }
  nlohmann::json j;
  j["benchmark"] = "serve";
  j["target"] = f.target;
  j["model"] = info.name();
  j["tensor_parallel"] = info.tensor_parallel();
  j["concurrency"] = f.concurrency;
  j["requests"] = n_requests;
  j["errors"] = errors;
  if (errors > 0) j["first_error"] = first_error;
  if (f.prompt_file.empty()) {
    j["prompt_len"] = f.prompt_len;
    j["shared_prefix"] = f.shared_prefix;
  } else {
    j["prompt_file"] = f.prompt_file;
    j["chat"] = f.chat;
  }
  j["gen_len"] = f.gen_len;
  j["logprobs"] = f.logprobs >= 0 ? nlohmann::json(f.logprobs) : nlohmann::json(nullptr);
  j["prompt_logprobs"] = f.prompt_logprobs >= 0 ? nlohmann::json(f.prompt_logprobs) : nlohmann::json(nullptr);
  j["json"] = f.format.json;
  j["json_schema"] = f.format.schema_file.empty() ? nlohmann::json(nullptr) : nlohmann::json(f.format.schema_file);
  if (open_loop) {
    j["request_rate"] = f.request_rate;
    j["last_arrival_s"] = arrivals.back();
    j["send_delay_p50_ms"] = 1e3 * Percentile(send_delay, 0.5);
    j["send_delay_p99_ms"] = 1e3 * Percentile(send_delay, 0.99);
  } else {
    j["request_rate"] = nullptr;  // closed loop
  }
  j["wall_s"] = wall;
  j["requests_per_s"] = (n_requests - errors) / wall;
  j["output_tokens"] = out_tokens;
  j["output_tok_s"] = out_tokens / wall;
  j["prompt_tokens"] = prompt_tokens;
  j["prompt_tok_s"] = prompt_tokens / wall;
  j["ttft_p50_ms"] = 1e3 * Percentile(ttft, 0.5);
  j["ttft_p99_ms"] = 1e3 * Percentile(ttft, 0.99);
  j["ttft_cold_p50_ms"] = 1e3 * Percentile(ttft_cold, 0.5);
  j["ttft_cache_hit_p50_ms"] = 1e3 * Percentile(ttft_hit, 0.5);
  j["cold_requests"] = ttft_cold.size();
  j["cache_hit_requests"] = ttft_hit.size();
  j["itl_p50_ms"] = 1e3 * Percentile(itl, 0.5);
  j["itl_p99_ms"] = 1e3 * Percentile(itl, 0.99);
  j["prefix_hit_rate"] = prompt_tokens ? static_cast<double>(cached_tokens) / prompt_tokens : 0.0;
  std::printf("%s\n", j.dump(2).c_str());
  return errors == 0 ? 0 : 1;
}

}  // namespace

void RegisterBenchServe(CLI::App& bench, int* exit_code) {
  auto f = std::make_shared<BenchServeFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "serve", "Load a bitfleet server with concurrent Generate streams (JSON: req/s, tok/s, TTFT, ITL, prefix hits)");
  cmd->add_option("--target", f->target, "Server address")->capture_default_str();
  AddClientSecurityFlags(*cmd, &f->security);
  cmd->add_option("-c,--concurrency", f->concurrency, "Streams open at once")->check(CLI::Range(1, 1024))->capture_default_str();
  cmd->add_option("-n,--requests", f->requests, "Requests in total (0: 4 per stream)")->check(CLI::Range(0, 1000000));
  cmd->add_option("--prompt-len", f->prompt_len, "Prompt tokens per request")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--gen-len", f->gen_len, "Generated tokens per request")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--shared-prefix", f->shared_prefix, "Leading prompt tokens every request shares")
      ->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd->add_option("--request-rate", f->request_rate,
                  "Open loop: requests arrive at this many per second (Poisson; -c bounds the streams open at "
                  "once, arrivals beyond wait for one); 0: closed loop, each stream sends its next request when the "
                  "last ends")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "Seed of the generated prompts (and of the arrival times)")->capture_default_str();
  cmd->add_option("--prompt-file", f->prompt_file,
                  "Every request sends this file's text as its prompt (instead of --prompt-len random tokens) and "
                  "ends at the model's end of generation or --gen-len: a real workload's decode")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--chat", f->chat, "With --prompt-file: send the text as one user message (the model's chat template)");
  cmd->add_option("--logprobs", f->logprobs,
                  "Every request asks for its tokens' log probabilities and this many alternatives (0..20): "
                  "measures their cost")
      ->check(CLI::Range(0, 20));
  cmd->add_option("--prompt-logprobs", f->prompt_logprobs,
                  "Every request asks for its prompt tokens' log probabilities and this many alternatives (0..20), "
                  "as lm-eval's scoring requests do; with --shared-prefix, its multiple-choice requests (one "
                  "context, several endings)")
      ->check(CLI::Range(0, 20));
  AddResponseFormatFlags(*cmd, &f->format);  // every request asks for it: the cost of the token masks
  cmd->add_option("--wait-ready", f->wait_ready_s, "Seconds to wait for health SERVING")->capture_default_str();
  cmd->callback([f, cmd, exit_code] {
    if (f->shared_prefix > f->prompt_len) {
      throw CLI::ValidationError("--shared-prefix", "must not exceed --prompt-len");
    }
    if (f->logprobs >= 0 && f->prompt_logprobs >= 0 && f->logprobs != f->prompt_logprobs) {
      throw CLI::ValidationError("--prompt-logprobs", "must equal --logprobs when both are given (one top_logprobs)");
    }
    if (f->chat && f->prompt_file.empty()) throw CLI::ValidationError("--chat", "needs --prompt-file");
    if (!f->prompt_file.empty()) {
      std::ifstream in(f->prompt_file, std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      if (!in && !in.eof()) throw CLI::ValidationError("--prompt-file", "cannot be read");
      f->prompt_text = text.str();
      if (f->prompt_text.empty()) throw CLI::ValidationError("--prompt-file", "is empty");
    }
    (void)cmd;
    StatusOr<v1::GenerateRequest> format = ResponseFormatRequest(f->format);
    if (!format.ok()) throw CLI::ValidationError("--json-schema", std::string(format.status().message()));
    f->format_request = *std::move(format);
    *exit_code = RunBenchServe(*f);
  });
}

}  // namespace bitfleet::tools

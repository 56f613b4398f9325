#include "tools/commands/serving_flags.h"

#include <algorithm>
#include <memory>
#include <string>

#include "coordinator/api_auth.h"
#include "tools/commands/engine_setup.h"

namespace bitfleet::tools {

coordinator::ControlTiming ServingTimingFlags::ToTiming() const {
  coordinator::ControlTiming timing;
  timing.heartbeat_interval = std::chrono::milliseconds(std::max(10, heartbeat_ms));
  timing.heartbeat_timeout = std::chrono::milliseconds(std::max(2 * heartbeat_ms, heartbeat_timeout_ms));
  timing.step_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(SecondsToDuration(step_timeout_s));
  return timing;
}

void AddTimingFlags(CLI::App& cmd, ServingTimingFlags* flags) {
  // Upper bounds keep the millisecond and nanosecond conversions far from overflow.
  cmd.add_option("--heartbeat-ms", flags->heartbeat_ms, "Control-stream heartbeat interval")
      ->check(CLI::Range(1, 3600 * 1000))
      ->capture_default_str();
  cmd.add_option("--heartbeat-timeout-ms", flags->heartbeat_timeout_ms,
                 "Silence after which a worker rank (or the coordinator) is declared dead")
      ->check(CLI::Range(1, 24 * 3600 * 1000))
      ->capture_default_str();
  cmd.add_option("--step-timeout", flags->step_timeout_s, "Seconds one step may take before its replica is failed")
      ->check(CLI::Range(0.001, 1e6))
      ->capture_default_str();
}

void AddClientApiFlags(CLI::App& cmd, coordinator::CoordinatorServerOptions* options) {
  cmd.add_option("--http-port", options->http_port,
                 "Port of the OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models, "
                 "/health (-1: off, 0: any free port)")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  cmd.add_option("--http-threads", options->http_threads,
                 "HTTP API connections served at once (a completion holds one until it ends); 0: --max-queue + 64 "
                 "per replica, every request the scheduler can hold")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  cmd.add_option("--metrics-port", options->metrics_port, "HTTP port for /metrics and /health (-1: off, 0: any free port)")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  // Loaded while the flags are parsed (once), so a bad file fails before any model is loaded.
  cmd.add_option_function<std::string>(
         "--api-keys",
         [options](const std::string& path) {
           StatusOr<std::unique_ptr<coordinator::ApiKeys>> keys = coordinator::ApiKeys::Load(path);
           if (!keys.ok()) throw CLI::ValidationError("--api-keys", std::string(keys.status().message()));
           options->api_keys = *std::move(keys);
         },
         "JSON file of tenants and their API keys (docs/protocol.md, Authentication): every gRPC and HTTP "
         "call but health then needs \"authorization: Bearer <key>\", and tenants share no cached prefixes")
      ->check(CLI::ExistingFile);
  cmd.add_option("--tls-cert", options->tls.cert_file,
                 "PEM certificate chain: both client APIs (gRPC and HTTP) serve TLS (with --tls-key)")
      ->check(CLI::ExistingFile);
  cmd.add_option("--tls-key", options->tls.key_file, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  cmd.add_option("--tls-client-ca", options->tls.client_ca_file,
                 "PEM CA certificates: clients must present a certificate it signed (mutual TLS)")
      ->check(CLI::ExistingFile);
  cmd.add_option("--tls-reload-seconds", options->tls.reload_seconds,
                 "Look for changed TLS files this often and serve them once they load, without a restart (a "
                 "rotated certificate; replace the files atomically); 0: read them at start only")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--chat-template", options->chat_template_file,
                 "Jinja chat template file to render chat requests with, instead of the model's "
                 "tokenizer.chat_template (for models without one, or to fix one; check it with `bitfleet "
                 "chat-template --template FILE`)")
      ->check(CLI::ExistingFile);
}

void AddSchedulingFlags(CLI::App& cmd, coordinator::CoordinatorServerOptions* options) {
  cmd.add_option("-c,--ctx", options->max_context, "Context length per request in tokens (0: the model's)")
      ->capture_default_str();
  cmd.add_option("--kv-block-size", options->kv_block_size, "Tokens per KV-cache block")->capture_default_str();
  cmd.add_option("--max-queue", options->max_queued_requests,
                 "Requests waiting for admission; more get RESOURCE_EXHAUSTED")
      ->capture_default_str();
  cmd.add_option("--step-token-budget", options->max_step_tokens,
                 "New tokens per step over all sequences (0: the workers' limit)")
      ->capture_default_str();
  cmd.add_flag("!--no-prefix-cache", options->prefix_caching,
               "Do not share cached prompt prefixes (nor keep prompt scores: --prompt-score-cache-mib)");
  cmd.add_option("--speculative-tokens", options->speculative.max_tokens,
                 "Speculative decoding by prompt lookup: feed up to this many draft tokens after a decoding "
                 "sequence's token, copied from where its last tokens occurred before in its prompt or output; the "
                 "model keeps those it would have generated (same samples, seeds included), so one step can give "
                 "several tokens. Pays off where outputs repeat their context (code edits, JSON, quotes) and the "
                 "step's weight reads bound it (few streams); 0: off")
      ->check(CLI::Range(0, coordinator::kMaxDraftTokens))
      ->capture_default_str();
  cmd.add_option("--speculative-ngram-max", options->speculative.max_ngram,
                 "Longest tail of a sequence looked up for a draft (the longest one found wins)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  cmd.add_option("--speculative-ngram-min", options->speculative.min_ngram, "Shortest tail looked up for a draft")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  cmd.add_option("--speculative-max-batch", options->speculative.max_batch,
                 "Draft only while at most this many sequences decode in a step (larger batches are bound by "
                 "arithmetic, where rejected drafts cost what they compute)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--speculative-min-chance", options->speculative.min_keep_chance,
                 "Feed a draft's i-th token only while the sequence's recent drafts say it is kept with at least "
                 "this chance: about what one more token costs as a share of a decode step (0.35 on AVX-512 CPUs "
                 "with Q4 models; lower it on GPUs, where a few more tokens cost almost nothing); 0: every draft "
                 "whole")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  // The speculative flags together (one alone is range-checked above), before any model loads.
  cmd.parse_complete_callback([options] {
    if (const char* error = coordinator::DraftOptionsError(options->speculative); *error != '\0') {
      throw CLI::ValidationError("--speculative-*", error);
    }
  });
  cmd.add_option("--prompt-score-cache-mib", options->prompt_score_cache_mib,
                 "Memory for the log probabilities of scored prompts (prompt_logprobs, OpenAI's echo), kept per KV "
                 "block so a request repeating a scored prompt's beginning (lm-eval's multiple-choice contexts) "
                 "reuses them and that prefix's KV; 0: off")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
}

void AddWorkerShapeFlags(CLI::App& cmd, worker::WorkerOptions* options, bool with_context) {
  AddDeviceFlag(&cmd, &options->device);
  AddKvTypeFlag(&cmd, &options->kv_type);
  cmd.add_option("-t,--threads", options->threads, "Compute threads per rank")->capture_default_str();
  cmd.add_option("--kv-blocks", options->kv_blocks,
                 "KV-cache blocks per rank (0: what --kv-cache-mib holds, else four full contexts, at most 16384 "
                 "tokens; with --device cuda, what --gpu-memory-utilization leaves after the weights)")
      ->capture_default_str();
  cmd.add_option("--kv-cache-mib", options->kv_cache_mib,
                 "CPU, with --kv-blocks 0: KV-cache memory per rank in MiB; the pool takes as many blocks of "
                 "--kv-type as fit (0: off; then --kv-blocks 0 means four full contexts)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--gpu-memory-utilization", options->gpu_memory_utilization,
                 "With --device cuda and --kv-blocks 0: the fraction of the GPU's memory this rank may fill "
                 "(weights, buffers and the KV cache)")
      ->check(CLI::Range(0.05, 1.0))
      ->capture_default_str();
  cmd.add_option("--max-step-tokens", options->max_step_tokens, "New tokens one step may feed, over all sequences")
      ->capture_default_str();
  cmd.add_option("--max-step-sequences", options->max_step_sequences, "Sequences one step may hold")
      ->capture_default_str();
  cmd.add_option("--max-logit-rows", options->max_logit_rows,
                 "Logit rows one step may return: one per sequence, one per prompt token a request asks to score "
                 "(prompt log probabilities, OpenAI's echo); more rows score prompts in larger chunks, each row "
                 "n_vocab floats of memory (0: --max-step-sequences)")
      ->capture_default_str();
  if (with_context) {
    cmd.add_option("-c,--ctx", options->max_context, "Context length in tokens (0: the model's)")
        ->capture_default_str();
    cmd.add_option("--kv-block-size", options->kv_block_size, "Tokens per KV-cache block")->capture_default_str();
  }
}

std::chrono::steady_clock::duration SecondsToDuration(double seconds) {
  // Clamped to [0, ~31 years]: far beyond any timeout, far below the int64 nanosecond range
  // (and a NaN counts as 0).
  const double clamped = seconds > 0 ? std::min(seconds, 1e9) : 0.0;
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(clamped));
}

}  // namespace bitfleet::tools

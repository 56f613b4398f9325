// `bitfleet bench decode`: single-sequence prompt processing and token generation speed of
// the CPU engine, as JSON: prompt tok/s, generation tok/s, weight bytes a decode step reads,
// and the effective memory bandwidth that implies (bytes per token × tokens per second), also
// counting the KV cache bytes each decode step reads.
// The prompt is synthetic token ids, so any model file works, tokenizer or not.
//
// Under `mpirun -np N` the ranks run as one tensor-parallel group (greedy tokens chosen by
// DistributedSampler) and rank 0 prints; the JSON adds the TP degree and the fraction of each
// phase's wall time every rank spent inside collectives (all-reduces, all-gathers: the
// communication cost of the split, including waiting for slower peers).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cache/block_pool.h"
#include "core/logging.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"
#include "tools/commands/engine_setup.h"
#include "worker/distributed_sampling.h"
#include "worker/sampler.h"
#include "worker/sequence_session.h"

namespace bitfleet::tools {
namespace {

struct BenchDecodeFlags {
  std::string model;
  int threads = 0;
  int prompt = 128;
  int gen = 64;
  int repeat = 3;
  PlacementFlags placement;
};

using Clock = std::chrono::steady_clock;

struct Timing {
  double prompt_s = 0;
  double gen_s = 0;
  double prompt_comm_s = 0;  // of which inside collectives
  double gen_comm_s = 0;
};

// One prefill of `prompt` and `gen` greedy decode steps from an empty cache.
StatusOr<Timing> RunOnce(worker::StepRunner& runner, const std::vector<int32_t>& prompt, int gen) {
  cache::BlockPool pool(runner.kv_blocks());
  worker::SequenceSession session(runner, pool);
  worker::Sampler sampler(runner.n_vocab());
  const sharding::Range slice = runner.vocab_slice();
  worker::DistributedSampler distributed(runner.communicator(), runner.n_vocab(), static_cast<int32_t>(slice.begin),
                                         static_cast<int32_t>(slice.size()));
  sharding::Communicator& comm = runner.communicator();
  worker::SamplingParams greedy;
  greedy.temperature = 0;
  worker::Rng rng(0);
  Timing t;
  const double c0 = comm.seconds_in_collectives();
  const Clock::time_point t0 = Clock::now();
  BF_ASSIGN_OR_RETURN(std::span<const float> logits, session.Append(prompt));
  const Clock::time_point t1 = Clock::now();
  const double c1 = comm.seconds_in_collectives();
  for (int i = 0; i < gen; ++i) {
    int32_t token = 0;
    if (runner.logits_whole()) {
      token = sampler.Sample(logits, {}, greedy, rng);
    } else {
      BF_ASSIGN_OR_RETURN(token, distributed.Sample(logits, {}, greedy, rng));
    }
    BF_ASSIGN_OR_RETURN(logits, session.Append(std::span<const int32_t>(&token, 1)));
  }
  const Clock::time_point t2 = Clock::now();
  t.prompt_s = std::chrono::duration<double>(t1 - t0).count();
  t.gen_s = std::chrono::duration<double>(t2 - t1).count();
  t.prompt_comm_s = c1 - c0;
  t.gen_comm_s = comm.seconds_in_collectives() - c1;
  return t;
}

// Every rank's value of `mine`, in rank order.
template <typename T>
StatusOr<std::vector<T>> GatherFromRanks(sharding::Communicator& comm, T mine) {
  std::vector<T> all(comm.size());
  BF_RETURN_IF_ERROR(comm.AllGather(&mine, sizeof(T), all.data()));
  return all;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

Status RunBenchDecode(const BenchDecodeFlags& flags) {
  if (flags.prompt < 1 || flags.gen < 1 || flags.repeat < 1) {
    return absl::InvalidArgumentError("--prompt, --gen and --repeat must be >= 1");
  }
  worker::RunnerOptions options;
  options.threads = flags.threads > 0 ? flags.threads : DefaultThreads();
  options.max_context = flags.prompt + flags.gen;
  options.max_step_sequences = 1;
  options.max_step_tokens = flags.prompt;
  options.max_logit_rows = 1;
  BF_ASSIGN_OR_RETURN(LoadedModel model, LoadModel(flags.model, options, /*with_tokenizer=*/false, flags.placement));
  worker::StepRunner& runner = *model.runner;
  // Deterministic ids spread over the vocabulary (avoiding the low special ids).
  std::vector<int32_t> prompt(flags.prompt);
  const int n_vocab = runner.n_vocab();
  for (int i = 0; i < flags.prompt; ++i) prompt[i] = n_vocab > 300 ? 259 + (i * 7919) % (n_vocab - 259) : i % n_vocab;

  // Warm-up: page the weights in and spin up the pool.
  BF_RETURN_IF_ERROR(RunOnce(runner, std::vector<int32_t>(prompt.begin(), prompt.begin() + std::min(8, flags.prompt)),
                             2).status());
  std::vector<double> prompt_tps, gen_tps, prompt_comm, gen_comm;
  for (int r = 0; r < flags.repeat; ++r) {
    BF_ASSIGN_OR_RETURN(Timing t, RunOnce(runner, prompt, flags.gen));
    prompt_tps.push_back(flags.prompt / t.prompt_s);
    gen_tps.push_back(flags.gen / t.gen_s);
    prompt_comm.push_back(t.prompt_comm_s / t.prompt_s);
    gen_comm.push_back(t.gen_comm_s / t.gen_s);
  }
  const double gen = Median(gen_tps);
  sharding::Communicator& comm = runner.communicator();
  BF_ASSIGN_OR_RETURN(std::vector<double> prompt_comm_by_rank, GatherFromRanks(comm, Median(prompt_comm)));
  BF_ASSIGN_OR_RETURN(std::vector<double> gen_comm_by_rank, GatherFromRanks(comm, Median(gen_comm)));
  BF_ASSIGN_OR_RETURN(std::vector<uint64_t> resident_by_rank, GatherFromRanks(comm, runner.weight_resident_bytes()));
  if (!IsPrimaryRank()) return absl::OkStatus();
  const uint64_t bytes_per_token = runner.weight_stream_bytes_per_token();
  const model::ModelConfig& c = runner.config();
  // KV cache bytes a decode step reads on this rank: every layer's K and V rows of the step's
  // context (its KV heads split over the TP ranks; int8 steps included), averaged over the
  // generated tokens (decode step i attends to prompt + i + 1 positions).
  const double mean_context = flags.prompt + (flags.gen + 1) / 2.0;
  const double kv_bytes_per_token =
      static_cast<double>(c.n_layer) * mean_context * 2.0 * (static_cast<double>(c.kv_dim()) / runner.tp_size()) *
      cache::KvBytesPerElement(flags.placement.kv_type, static_cast<int>(c.head_dim));
  nlohmann::json out = {
      {"model", flags.model},
      {"name", c.name},
      {"arch", c.arch_name},
      {"threads", options.threads},
      {"kernel", runner.kernel_variant()},
      {"prompt_tokens", flags.prompt},
      {"gen_tokens", flags.gen},
      {"repeat", flags.repeat},
      {"prompt_tok_s", Median(prompt_tps)},
      {"gen_tok_s", gen},
      {"weight_bytes_per_token", bytes_per_token},
      {"effective_gb_s", bytes_per_token * gen / 1e9},
      {"kv_type", cache::KvTypeName(flags.placement.kv_type)},
      {"kv_bytes_per_token", kv_bytes_per_token},
      // Everything a decode step streams from memory: weights plus the KV cache.
      {"effective_gb_s_with_kv", (static_cast<double>(bytes_per_token) + kv_bytes_per_token) * gen / 1e9},
      {"weight_resident_bytes", runner.weight_resident_bytes()},
      {"tp", runner.tp_size()},
      {"comm_backend", comm.backend()},
      // Fraction of each phase's wall time spent inside collectives, per rank (medians).
      {"comm_fraction_prompt", prompt_comm_by_rank},
      {"comm_fraction_gen", gen_comm_by_rank},
      {"weight_resident_bytes_by_rank", resident_by_rank},
  };
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchDecode(CLI::App& bench, int* exit_code) {
  auto flags = std::make_shared<BenchDecodeFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "decode", "Single-sequence prompt and generation speed of the CPU engine (JSON: tok/s, bytes/token, GB/s)");
  cmd->add_option("-m,--model", flags->model, "GGUF model file")->required();
  cmd->add_option("-t,--threads", flags->threads, "Threads (default: all hardware threads)");
  cmd->add_option("--prompt", flags->prompt, "Prompt tokens (one prefill step)")->capture_default_str();
  cmd->add_option("--gen", flags->gen, "Generated tokens (greedy decode steps)")->capture_default_str();
  cmd->add_option("--repeat", flags->repeat, "Measured runs; the median is reported")->capture_default_str();
  AddPlacementFlags(cmd, &flags->placement);
  cmd->callback([flags, exit_code] {
    const Status status = RunBenchDecode(*flags);
    *exit_code = status.ok() ? 0 : ReportError("bench", status);
  });
}

}  // namespace bitfleet::tools

// Subcommands of the `bitfleet` binary. Each Register* adds one subcommand to `app`; the
// callback it installs runs the command and stores its exit code in `*exit_code`.
#pragma once

#include "CLI/CLI.hpp"

namespace bitfleet::tools {

void RegisterInspect(CLI::App& app, int* exit_code);
void RegisterConvert(CLI::App& app, int* exit_code);
void RegisterSynth(CLI::App& app, int* exit_code);
void RegisterQuantize(CLI::App& app, int* exit_code);
void RegisterRun(CLI::App& app, int* exit_code);
void RegisterLogits(CLI::App& app, int* exit_code);
void RegisterEval(CLI::App& app, int* exit_code);
// `bench decode`, added under the `bench` subcommand by RegisterBench.
void RegisterBenchDecode(CLI::App& bench, int* exit_code);
// `bench kernels` (tools/commands/bench_kernels.cc).
void RegisterBenchKernels(CLI::App& bench, int* exit_code);
// `bench tokenizer` (tools/commands/bench_tokenizer.cc).
void RegisterBenchTokenizer(CLI::App& bench, int* exit_code);
// `bench serve`: load generator against a running server (gRPC client).
void RegisterBenchServe(CLI::App& bench, int* exit_code);
// `bench json-mask`: JSON mode's mask cost on a vocabulary (bench_json_mask.cc).
void RegisterBenchJsonMask(CLI::App& bench, int* exit_code);
// `chat-template`: renders a conversation with a chat template (tools/commands/chat_template.cc).
void RegisterChatTemplate(CLI::App& app, int* exit_code);
// `tokenize` (tools/commands/tokenize.cc).
void RegisterTokenize(CLI::App& app, int* exit_code);
// `bench gpu` (tools/commands/bench_gpu.cc; CUDA builds, standalone binary bitfleet-bench-gpu).
void RegisterBenchGpu(CLI::App& bench, int* exit_code);
// `bench`, with the benchmarks above as its subcommands (tools/commands/bench.cc).
void RegisterBench(CLI::App& app, int* exit_code);
// Serving (issue 6): `serve` (coordinator + mpirun workers on one box), `coordinator`,
// `worker` (one rank), `generate` (streaming gRPC client).
void RegisterServe(CLI::App& app, int* exit_code);
void RegisterCoordinator(CLI::App& app, int* exit_code);
void RegisterWorker(CLI::App& app, int* exit_code);
void RegisterGenerate(CLI::App& app, int* exit_code);
// `health`: grpc.health.v1 client for probes and scripts (tools/commands/health.cc).
void RegisterHealth(CLI::App& app, int* exit_code);

}  // namespace bitfleet::tools

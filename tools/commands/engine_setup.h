// Shared plumbing of the engine commands (run, logits, eval, bench decode): loading a model
// file into a StepRunner (CPU or CUDA, by --device) and its tokenizer, exit codes for Status
// errors, token-list parsing and the chat encoding used by `run --chat`.
//
// Tensor parallelism: started by mpirun with N > 1 processes (`mpirun -np N bitfleet run ...`),
// every process is one rank of a TP group of N over Open MPI; LoadModel gives each runner its
// rank's shard and the group's communicator. All ranks run the same command in lockstep; only
// rank 0 (IsPrimaryRank) prints results or writes files. A failure on any rank ends the whole
// job (ReportError aborts the MPI job), so a dead or hung peer never leaves the others hanging:
// collectives give up after --tp-timeout seconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "core/status.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/tokenizer.h"
#include "sharding/communicator.h"
#include "worker/runner_factory.h"

namespace bitfleet::tools {

// Default --threads: the machine's hardware threads (at least 1).
int DefaultThreads();

// Where an engine command runs its model: the device (--device) and, under mpirun, how long
// a tensor-parallel collective may wait (--tp-timeout).
// Also the KV cache's element type (--kv-type), which LoadModel passes to the runner.
struct PlacementFlags {
  worker::RunnerDevice device = worker::RunnerDevice::kCpu;
  double timeout_s = 60;  // a collective that waits longer than this fails the whole group
  cache::KvType kv_type = cache::KvType::kF16;
};
void AddPlacementFlags(CLI::App* cmd, PlacementFlags* flags);
// --device cpu|cuda into `device` (also used by the serving commands).
void AddDeviceFlag(CLI::App* cmd, worker::RunnerDevice* device);
// --kv-type f16|int8 into `type` (also used by the serving commands).
void AddKvTypeFlag(CLI::App* cmd, cache::KvType* type);

// The tensor-parallel group of this process: an Open MPI communicator over all processes when
// started by mpirun with more than one process (created on first call, lives until exit); null
// for a single process (TP=1) or a build without MPI.
StatusOr<sharding::Communicator*> TpGroup(const PlacementFlags& flags);
// True on rank 0 of the group, or without one: the process that prints and writes.
bool IsPrimaryRank();

struct LoadedModel {
  std::shared_ptr<const gguf::GgufFile> file;
  std::unique_ptr<worker::StepRunner> runner;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;  // null unless asked for
};

// Opens `path`, builds a runner with `options` on `placement.device` (max_context 0: the
// model's context) and, when `with_tokenizer`, the tokenizer from the same file's metadata.
// Under mpirun the runner is this rank's shard of the TP group (TpGroup) unless
// options.communicator is already set.
StatusOr<LoadedModel> LoadModel(const std::string& path, const worker::RunnerOptions& options, bool with_tokenizer,
                                const PlacementFlags& placement = {});

// Exit code for a failed command: 2 for bad input (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE),
// 1 otherwise. Logs the message under `module`. In a TP group of more than one process it then
// aborts the whole MPI job with that code (MPI_Abort): the peers may be blocked in a collective
// this rank will never join.
int ReportError(const std::string& module, const Status& status);

// Parses "1,2, 3\n4" (commas and/or whitespace) into token ids; INVALID_ARGUMENT on anything
// else or on a value outside int32.
StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text);

// Encodes a one-turn conversation (a system message unless `system` is empty, then `user`)
// with `chat_template`, exactly as the server encodes that chat (coordinator/chat_prompt.h): the
// template's own default system message applies when `system` is empty. `turn_end`, when given,
// receives the token the template ends an assistant's turn with (ChatPrompt::turn_end_tokens).
StatusOr<std::vector<int32_t>> EncodeChat(const std::string& chat_template, const tokenizer::Tokenizer& tokenizer,
                                          const std::string& system, const std::string& user,
                                          std::vector<int32_t>* turn_end = nullptr);

}  // namespace bitfleet::tools

// One `bitfleet worker` rank (DESIGN.md §7): loads this rank's shard of the model, connects to
// the coordinator's control endpoint, registers (model, replica, rank, world size, capacity)
// and executes StepPlans until the coordinator says Shutdown.
//
// Rank and world size: under mpirun (or srun) they come from MPI and the rank's peers are the
// other processes of the job (MpiCommunicator); flags, when also given, must agree. Without
// MPI, --rank/--world-size name the rank and only a group of one can run (a multi-process group
// needs a communicator: mpirun on CPU).
//
// Failure: an error that breaks the group (a collective timing out, the stream to the
// coordinator ending, the coordinator going silent) ends Run with that error and the process
// exits non-zero, so mpirun tears the whole group down (a TP group is one failure unit).
//
// Thread-safety: Run once from the main thread (it drives the communicator, which MPI allows
// only there); Stop from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"
#include "model/gguf/gguf.h"
#include "worker/step_runner.h"

namespace bitfleet::worker {

struct WorkerOptions {
  std::string model;        // GGUF file
  std::string coordinator;  // host:port of the coordinator's control endpoint
  int rank = -1;            // -1: from MPI, else 0
  int world_size = -1;      // -1: from MPI, else 1
  int replica = 0;
  RunnerDevice device = RunnerDevice::kCpu;  // where this rank's runner computes
  int threads = 1;
  int max_context = 0;  // 0: the model's training context
  int kv_blocks = 0;    // 0: four full contexts, at most 16384 tokens (at least one context);
                        // with device kCuda, what gpu_memory_utilization leaves (RunnerOptions)
  double gpu_memory_utilization = 0.9;
  int kv_cache_mib = 0;  // CPU, with kv_blocks 0: the KV pool's memory per rank (0: the default above)
  int kv_block_size = 16;
  cache::KvType kv_type = cache::KvType::kF16;  // int8: CPU runners only
  int max_step_tokens = 512;
  int max_step_sequences = 64;
  // Logit rows one step may return: one per sequence, one per token of a scored prompt chunk
  // (prompt log probabilities). Below max_step_sequences (0 included): max_step_sequences. Each
  // row costs n_vocab floats of host (and, with CUDA, device) memory.
  int max_logit_rows = 0;
  std::chrono::milliseconds connect_timeout{60000};
  std::chrono::milliseconds collective_timeout{60000};
  // ControlClientOptions::on_stuck_step: what to do when a step outlives the coordinator's
  // patience (`bitfleet worker` logs and exits 1). Null: nothing.
  std::function<void(std::chrono::milliseconds running)> on_stuck_step;
  // Communicator between the ranks: "auto" (Open MPI under mpirun, none for a group of one) or
  // "nccl" (NCCL; bootstrapped over MPI under mpirun, else through the coordinator's
  // ExchangeNcclId with --rank/--world-size, for independent pods). Needs a CUDA + NCCL build and
  // a GPU per rank. The CUDA runner then all-reduces its device buffers through it (at one rank
  // too, as identities: a check of that path on one GPU); the CPU runner all-reduces host
  // buffers through it.
  std::string comm = "auto";
};

// True when this binary has the NCCL communicator (a CUDA build that found NCCL).
bool NcclBuilt();

// The runner options a rank with options `o` builds its runner with (`file` is the model `o`
// names; the KV pool default depends on its context): threads, context, KV pool, step limits,
// device. The communicator is left null for the caller to set. `bitfleet serve --in-process`
// uses the same resolution, so a replica in the serve process is shaped as a worker would be.
StatusOr<RunnerOptions> ResolveRunnerOptions(const WorkerOptions& o, const gguf::GgufFile& file);

class WorkerProcess {
 public:
  // Joins the MPI job when launched by mpirun, loads the shard and prepares the control client.
  // INVALID_ARGUMENT for inconsistent options; the model loader's errors otherwise.
  // Under mpirun a failed start marks the MPI group broken, so that exit skips MPI_Finalize
  // (which would wait for the peers) and mpirun ends the job.
  static StatusOr<std::unique_ptr<WorkerProcess>> Create(const WorkerOptions& options);
  ~WorkerProcess();

  // Registers and serves plans: OK after the coordinator's Shutdown, CANCELLED after Stop(),
  // the breaking error otherwise.
  Status Run();
  void Stop();

  int rank() const;
  int world_size() const;

 private:
  struct State;
  explicit WorkerProcess(std::unique_ptr<State> state);
  static StatusOr<std::unique_ptr<WorkerProcess>> CreateRank(const WorkerOptions& options);
  std::unique_ptr<State> state_;
};

}  // namespace bitfleet::worker

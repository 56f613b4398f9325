// What the engine commands, the step executor and the in-process server drive: one model
// shard's forward pass over a batch of sequences, on whichever device holds it.
//
// Two implementations: worker/model_runner.h (CPU, any tensor-parallel degree) and
// worker/cuda_model_runner.h (one CUDA device, TP=1). worker/runner_factory.h picks one from
// RunnerOptions::device. The Step contract, the validation and the errors are ModelRunner's
// (see there); the accessors below are what callers outside the runner need.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "cache/kv_storage.h"
#include "core/status.h"
#include "model/arch/model_config.h"
#include "sharding/communicator.h"
#include "sharding/shard_plan.h"

namespace bitfleet::worker {

// Where a runner computes (worker/runner_factory.h).
enum class RunnerDevice {
  kCpu,   // worker/model_runner.h: any TP degree, the CPU kernel variant of this machine
  kCuda,  // worker/cuda_model_runner.h: the current CUDA device, TP=1, f16 KV cache
};
// "cpu" / "cuda".
const char* RunnerDeviceName(RunnerDevice device);

struct RunnerOptions {
  RunnerDevice device = RunnerDevice::kCpu;
  int threads = 1;               // ThreadPool size, including the calling thread
  int max_step_tokens = 512;     // new tokens per Step, summed over sequences
  int max_step_sequences = 64;   // sequences per Step
  int max_logit_rows = 64;       // logit rows one Step may return (all_logits rows count each)
  int max_context = 0;           // positions per sequence; 0: the model's training context
  int kv_block_size = 16;        // tokens per KV block
  int kv_blocks = 0;             // KV blocks to allocate; 0: one full max_context sequence, or see below
  // CUDA runner with kv_blocks 0: size the KV pool to what fits within this fraction of the
  // device's total memory, less what is in use once the weights and step buffers are loaded (as
  // vLLM's --gpu-memory-utilization). 0: off. Ignored by the CPU runner.
  double gpu_memory_utilization = 0;
  // CPU runner with kv_blocks 0: the KV pool's memory budget in bytes (as many blocks of
  // kv_type as fit; at least one max_context sequence, else INVALID_ARGUMENT). 0: off.
  int64_t kv_cache_bytes = 0;
  cache::KvType kv_type = cache::KvType::kF16;
  // Peers of a tensor-parallel group; null: single rank. Not owned; must outlive the runner.
  sharding::Communicator* communicator = nullptr;
  // Under TP>1: all-gather whole logit rows (n_vocab wide) on every rank instead of returning
  // this rank's vocabulary slice. No effect at TP=1 (rows are always whole there).
  bool gather_logits = false;
};

// One sequence's part of a Step. Spans are read during Step only.
struct SequenceStep {
  std::span<const int32_t> tokens;       // new tokens, at least one
  int32_t start_pos = 0;                 // position of tokens[0]; the cache holds [0, start_pos)
  std::span<const int32_t> block_table;  // covers positions [0, start_pos + tokens.size())
  bool all_logits = false;               // logits for every new token, not only the last
};

// Logits of one Step, in the runner's buffer: valid until the next Step or the runner dies.
class StepLogits {
 public:
  StepLogits() = default;
  StepLogits(const float* data, const int32_t* row_begin, int n_sequences, int n_vocab, int vocab_begin = 0)
      : data_(data), row_begin_(row_begin), n_sequences_(n_sequences), n_vocab_(n_vocab), vocab_begin_(vocab_begin) {}

  int n_sequences() const { return n_sequences_; }
  // Values per row: the whole vocabulary, or this rank's vocabulary slice under TP>1 without
  // gather_logits. Value j of a row is the logit of token vocab_begin() + j.
  int n_vocab() const { return n_vocab_; }
  int vocab_begin() const { return vocab_begin_; }
  // Rows of sequence `seq`: one (its last token) or one per new token when all_logits.
  int rows(int seq) const { return row_begin_[seq + 1] - row_begin_[seq]; }
  // Row `row` of sequence `seq`, n_vocab floats.
  std::span<const float> Row(int seq, int row) const {
    return {data_ + static_cast<size_t>(row_begin_[seq] + row) * n_vocab_, static_cast<size_t>(n_vocab_)};
  }
  // The logits after the sequence's last new token (what sampling needs).
  std::span<const float> Last(int seq) const { return Row(seq, rows(seq) - 1); }

 private:
  const float* data_ = nullptr;
  const int32_t* row_begin_ = nullptr;  // n_sequences + 1 entries
  int n_sequences_ = 0;
  int n_vocab_ = 0;
  int vocab_begin_ = 0;
};

// Shared by the runners (this one and worker/cuda_model_runner.h):
// INVALID_ARGUMENT for a model with a zero dimension, heads not a multiple of KV heads or a bad
// RoPE dimension.
Status CheckRunnerShapes(const model::ModelConfig& config);
// Checks `options` and fills the defaults that depend on the model (max_context, kv_blocks).
Status ResolveRunnerOptions(const model::ModelConfig& config, RunnerOptions* options);
// Step's batch checks (see ModelRunner::Step) against resolved `options`; sets the step's token
// and logit-row counts.
Status ValidateStepBatch(std::span<const SequenceStep> batch, const RunnerOptions& options, int n_vocab,
                         int* n_tokens, int* n_rows);
// Whole logit rows under TP>1 (gather_logits), collectively: every rank of `plan` calls it with
// its n_rows rows of its vocabulary slice in `local` (slice-wide rows, back to back; the buffer
// holds n_rows × plan.max_vocab_slice() floats and is padded in place), `gathered` holds
// plan.size() times that, and `out` gets n_rows × n_vocab floats, every token at its id.
Status GatherLogitRows(sharding::Communicator& comm, const sharding::ShardPlan& plan, int rank, int n_rows,
                       float* local, float* gathered, uint64_t n_vocab, float* out);

class StepRunner {
 public:
  virtual ~StepRunner() = default;

  // One step over `batch` (ModelRunner::Step's contract). The logits stay valid until the next
  // Step or the runner's end.
  virtual StatusOr<StepLogits> Step(std::span<const SequenceStep> batch) = 0;

  virtual const model::ModelConfig& config() const = 0;
  virtual const RunnerOptions& options() const = 0;  // with defaults resolved
  // The model's whole vocabulary (token ids a Step accepts).
  virtual int n_vocab() const = 0;
  // Tensor parallelism: this rank's place in its group and the group's communicator (the
  // single-rank identity at TP=1).
  virtual int tp_rank() const = 0;
  virtual int tp_size() const = 0;
  virtual sharding::Communicator& communicator() const = 0;
  // The vocabulary slice this rank's logit rows cover when they are not gathered.
  virtual sharding::Range vocab_slice() const = 0;
  // True when Step returns whole rows (TP=1, or gather_logits).
  virtual bool logits_whole() const = 0;
  virtual int kv_block_size() const = 0;
  virtual int kv_blocks() const = 0;
  // Bytes of weights one decode step streams (every matmul weight once, plus one embedding
  // row): the numerator of effective bandwidth.
  virtual uint64_t weight_stream_bytes_per_token() const = 0;
  // Bytes of the packed weights where the runner computes (host or device memory).
  virtual uint64_t weight_resident_bytes() const = 0;
  // Bytes read in place from the file mapping (the embedding rows).
  virtual uint64_t weight_mapped_bytes() const = 0;
  // Where and with which kernels the runner computes: "amx", "avx2", "cuda sm_90 (NVIDIA H200)".
  virtual std::string kernel_variant() const = 0;
};

}  // namespace bitfleet::worker

// The forward pass of one model shard over a batch of sequences (DESIGN.md §3-§6).
//
// A Step takes any mix of sequences, each bringing new tokens: a prefill chunk or a single
// decode token, the position of its first new token, and its KV block table. The runner
// embeds the tokens, runs every decoder layer over the whole batch at once (one weight pass
// per step: all tokens share each matmul), writes the new K/V into the paged cache and attends
// over each sequence's cached positions, then returns logits for the last token of every
// sequence (or for all its tokens when asked, for teacher-forced scoring).
//
// Memory: every scratch buffer is sized at Create from RunnerOptions (max tokens, sequences
// and logit rows per step), so Step does not allocate. The KV storage is owned by the runner;
// block ids come from a cache::BlockPool of kv_blocks() blocks that the caller (scheduler,
// command, test) owns.
//
// Tensor parallelism (DESIGN.md §4, docs/sharding.md): the runner talks to its peers only
// through the Communicator given in RunnerOptions (the single-rank identity when absent). With a
// group of N, Create computes the sharding::ShardPlan for N ranks and loads only this rank's
// slices: query heads, KV heads and FFN units are split (column-parallel Q/K/V/gate/up,
// row-parallel attention output and down), the embedding and LM head are vocab-parallel. A Step
// all-reduces the embedding rows (each rank holds part of the vocabulary), the per-token absmax
// feeding a row-parallel quantized matmul (max), BitNet's sub-norm sum of squares (sum) and the
// row-parallel outputs (sum), so TP=N computes what TP=1 computes up to float summation order.
// Every rank must call Step with the same batch, in the same order (a Step is collective).
//
// Logits under TP=N: each rank computes the rows of its vocabulary slice. By default StepLogits
// holds that slice (StepLogits::vocab_begin(), n_vocab() = slice width); sample from it with
// worker/distributed_sampling.h without gathering whole rows. RunnerOptions::gather_logits
// all-gathers full rows on every rank instead (teacher-forced scoring, logit dumps, tests).
//
// Thread-safety: one Step at a time (the runner's ThreadPool and scratch are shared).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "cache/kv_storage.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"
#include "sharding/communicator.h"
#include "sharding/shard_plan.h"

namespace bitfleet::worker {

struct RunnerOptions {
  int threads = 1;               // ThreadPool size, including the calling thread
  int max_step_tokens = 512;     // new tokens per Step, summed over sequences
  int max_step_sequences = 64;   // sequences per Step
  int max_logit_rows = 64;       // logit rows one Step may return (all_logits rows count each)
  int max_context = 0;           // positions per sequence; 0: the model's training context
  int kv_block_size = 16;        // tokens per KV block
  int kv_blocks = 0;             // KV blocks to allocate; 0: one full max_context sequence
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

class ModelRunnerImpl;

class ModelRunner {
 public:
  // Loads (and repacks) the weights of `file` for its architecture (llama, bitnet,
  // bitnet-b1.58) and allocates the KV storage and scratch. The file must outlive the runner
  // (weights may stay in its mapping). Errors name the offending tensor or option.
  static StatusOr<std::unique_ptr<ModelRunner>> Create(std::shared_ptr<const gguf::GgufFile> file,
                                                       const RunnerOptions& options);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  // Runs one step. INVALID_ARGUMENT for a malformed batch (empty token list, token id outside
  // the vocabulary, position beyond max_context, block table too short or holding an id
  // outside the storage), RESOURCE_EXHAUSTED when the batch exceeds the step limits. A failed
  // validation changes nothing; the KV cache is written only by a successful step.
  StatusOr<StepLogits> Step(std::span<const SequenceStep> batch);

  const model::ModelConfig& config() const;
  const RunnerOptions& options() const;  // with defaults resolved (max_context, kv_blocks)
  // The model's whole vocabulary (token ids a Step accepts).
  int n_vocab() const;
  // Tensor parallelism: this rank's place in the group, its slices (the shard plan's entry for
  // this rank) and the group's communicator (the single-rank identity at TP=1).
  int tp_rank() const;
  int tp_size() const;
  const sharding::RankShard& shard() const;
  sharding::Communicator& communicator() const;
  // The vocabulary slice this rank's logit rows cover when they are not gathered.
  sharding::Range vocab_slice() const;
  // True when Step returns whole rows (TP=1, or gather_logits).
  bool logits_whole() const;
  int kv_block_size() const;
  int kv_blocks() const;
  const cache::KvStorage& kv_storage() const;
  // Bytes of weights one decode step streams from memory (every matmul weight in its file
  // encoding once, plus one embedding row): the numerator of effective GB/s.
  uint64_t weight_stream_bytes_per_token() const;
  // Resident bytes of the packed weights (this rank's slices).
  uint64_t weight_resident_bytes() const;
  // Bytes of this rank's embedding rows, read in place from the file mapping (paged in as
  // tokens are looked up; not included in weight_resident_bytes).
  uint64_t weight_mapped_bytes() const;
  // The kernel variant in use ("avx2", "scalar", ...).
  std::string kernel_variant() const;

 private:
  explicit ModelRunner(std::unique_ptr<ModelRunnerImpl> impl);
  std::unique_ptr<ModelRunnerImpl> impl_;
};

}  // namespace bitfleet::worker

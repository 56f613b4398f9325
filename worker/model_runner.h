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
#include "worker/step_runner.h"

namespace bitfleet::worker {

class ModelRunnerImpl;

class ModelRunner final : public StepRunner {
 public:
  // Loads (and repacks) the weights of `file` for its architecture (llama, bitnet,
  // bitnet-b1.58) and allocates the KV storage and scratch. The file must outlive the runner
  // (weights may stay in its mapping). Errors name the offending tensor or option.
  // options.device is not looked at (worker/runner_factory.h dispatches on it).
  static StatusOr<std::unique_ptr<ModelRunner>> Create(std::shared_ptr<const gguf::GgufFile> file,
                                                       const RunnerOptions& options);
  ~ModelRunner() override;
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  // Runs one step. INVALID_ARGUMENT for a malformed batch (empty token list, token id outside
  // the vocabulary, position beyond max_context, block table too short or holding an id
  // outside the storage), RESOURCE_EXHAUSTED when the batch exceeds the step limits. A failed
  // validation changes nothing; the KV cache is written only by a successful step.
  StatusOr<StepLogits> Step(std::span<const SequenceStep> batch) override;

  const model::ModelConfig& config() const override;
  const RunnerOptions& options() const override;  // with defaults resolved (max_context, kv_blocks)
  int n_vocab() const override;
  int tp_rank() const override;
  int tp_size() const override;
  // This rank's slices (the shard plan's entry for this rank).
  const sharding::RankShard& shard() const;
  sharding::Communicator& communicator() const override;
  sharding::Range vocab_slice() const override;
  bool logits_whole() const override;
  int kv_block_size() const override;
  int kv_blocks() const override;
  const cache::KvStorage& kv_storage() const;
  // Every matmul weight in its file encoding once, plus one embedding row.
  uint64_t weight_stream_bytes_per_token() const override;
  // This rank's packed slices.
  uint64_t weight_resident_bytes() const override;
  // This rank's embedding rows, read in place from the file mapping (paged in as tokens are
  // looked up; not included in weight_resident_bytes).
  uint64_t weight_mapped_bytes() const override;
  // The CPU kernel variant in use ("avx2", "scalar", ...).
  std::string kernel_variant() const override;

 private:
  explicit ModelRunner(std::unique_ptr<ModelRunnerImpl> impl);
  std::unique_ptr<ModelRunnerImpl> impl_;
};

}  // namespace bitfleet::worker

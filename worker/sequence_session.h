// One sequence driven through a StepRunner (CPU or CUDA), for commands, tests and benchmarks
// (the server's scheduler batches many sequences itself). Owns the sequence's block table, takes blocks from
// a caller-owned BlockPool as the sequence grows and gives them back on Reset or destruction.
// Not thread-safe; the runner must outlive the session.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "core/status.h"
#include "worker/step_runner.h"

namespace bitfleet::worker {

class SequenceSession {
 public:
  SequenceSession(StepRunner& runner, cache::BlockPool& pool);
  ~SequenceSession();
  SequenceSession(const SequenceSession&) = delete;
  SequenceSession& operator=(const SequenceSession&) = delete;

  // Tokens held in the KV cache so far.
  int32_t position() const { return position_; }
  std::span<const int32_t> block_ids() const { return table_.ids(); }

  // Feeds `tokens` (prefill in steps of at most `chunk` tokens; 0: the runner's step limit) and
  // returns the logits after the last one, valid until the runner's next Step. A failure
  // leaves position() at the last completed chunk.
  StatusOr<std::span<const float>> Append(std::span<const int32_t> tokens, int chunk = 0);
  // Like Append, but copies the logits after every token into `all_logits` (resized to
  // tokens.size() × n_vocab). Chunks are also capped by the runner's max_logit_rows.
  Status AppendAll(std::span<const int32_t> tokens, std::vector<float>* all_logits, int chunk = 0);
  // Forgets the sequence and returns its blocks to the pool.
  void Reset();

 private:
  StatusOr<StepLogits> Feed(std::span<const int32_t> tokens, bool all_logits);

  StepRunner& runner_;
  cache::BlockPool& pool_;
  cache::BlockTable table_;
  int32_t position_ = 0;
};

}  // namespace bitfleet::worker

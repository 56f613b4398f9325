// Chunked perplexity (and KL divergence against a reference model) over a token stream, as
// llama.cpp's perplexity tool runs it:
//  - the tokens are cut into floor(n / ctx) chunks of ctx tokens (a shorter tail is dropped);
//  - each chunk is evaluated from an empty cache, with its first token replaced by BOS when
//    the vocabulary adds one (`bos` >= 0);
//  - the predictions of the second half are scored: positions j in [ctx/2, ctx-1) predict the
//    token at j+1 (score_all: every j in [0, ctx-1)).
// Metric definitions in eval_metrics.h.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/status.h"
#include "worker/eval_metrics.h"
#include "worker/step_runner.h"

namespace bitfleet::worker {

struct PerplexityOptions {
  int ctx = 512;           // tokens per chunk (>= 2)
  bool score_all = false;  // score every prediction of a chunk, not only the second half
  int32_t bos = -1;        // token replacing each chunk's first token; < 0: keep the text's
  int max_chunks = 0;      // 0: all
};

// The chunks the options cut `tokens` into (first tokens replaced by `bos`), in text order.
// INVALID_ARGUMENT for ctx < 2 or fewer tokens than one chunk.
StatusOr<std::vector<std::vector<int32_t>>> PerplexityChunks(std::span<const int32_t> tokens,
                                                             const PerplexityOptions& options);
// The first scored prediction of a chunk: predictions j in [FirstScored, ctx - 1) are scored,
// prediction j being the logits after chunk[j], whose target is chunk[j + 1].
int FirstScored(const PerplexityOptions& options);

// Runs `model` (and `reference`, when not null; it must have the same vocabulary size) over
// the chunks. Both runners need max_context >= ctx. `progress` (optional) gets (chunk done,
// total chunks, summary so far). INVALID_ARGUMENT when there is not one full chunk.
StatusOr<EvalSummary> EvaluatePerplexity(
    StepRunner& model, StepRunner* reference, std::span<const int32_t> tokens, const PerplexityOptions& options,
    const std::function<void(int, int, const EvalSummary&)>& progress = nullptr);

}  // namespace bitfleet::worker

#include "worker/perplexity.h"

#include <algorithm>
#include <vector>

#include "cache/block_pool.h"
#include "worker/sequence_session.h"

namespace bitfleet::worker {
namespace {

Status ChunkLogits(StepRunner& runner, std::span<const int32_t> chunk, std::vector<float>* logits) {
  cache::BlockPool pool(runner.kv_blocks());
  SequenceSession session(runner, pool);
  return session.AppendAll(chunk, logits);
}

}  // namespace

StatusOr<std::vector<std::vector<int32_t>>> PerplexityChunks(std::span<const int32_t> tokens,
                                                             const PerplexityOptions& options) {
  const int ctx = options.ctx;
  if (ctx < 2) return absl::InvalidArgumentError(absl::StrCat("context must be >= 2 tokens, got ", ctx));
  if (static_cast<int64_t>(tokens.size()) < ctx) {
    return absl::InvalidArgumentError(absl::StrCat("the text has ", tokens.size(),
                                                   " tokens, fewer than one chunk of ", ctx, " (lower --ctx)"));
  }
  size_t n_chunks = tokens.size() / static_cast<size_t>(ctx);
  if (options.max_chunks > 0) n_chunks = std::min(n_chunks, static_cast<size_t>(options.max_chunks));
  std::vector<std::vector<int32_t>> chunks;
  for (size_t c = 0; c < n_chunks; ++c) {
    const auto begin = tokens.begin() + static_cast<std::ptrdiff_t>(c * ctx);
    std::vector<int32_t>& chunk = chunks.emplace_back(begin, begin + ctx);
    if (options.bos >= 0) chunk[0] = options.bos;
  }
  return chunks;
}

int FirstScored(const PerplexityOptions& options) { return options.score_all ? 0 : options.ctx / 2; }

StatusOr<EvalSummary> EvaluatePerplexity(StepRunner& model, StepRunner* reference, std::span<const int32_t> tokens,
                                         const PerplexityOptions& options,
                                         const std::function<void(int, int, const EvalSummary&)>& progress) {
  const int ctx = options.ctx;
  BF_ASSIGN_OR_RETURN(const std::vector<std::vector<int32_t>> chunks, PerplexityChunks(tokens, options));
  for (StepRunner* r : {&model, reference}) {
    if (r != nullptr && r->options().max_context < ctx) {
      return absl::InvalidArgumentError(
          absl::StrCat("runner context ", r->options().max_context, " is shorter than the chunk of ", ctx));
    }
  }
  if (reference != nullptr && reference->n_vocab() != model.n_vocab()) {
    return absl::InvalidArgumentError(absl::StrCat("reference vocabulary has ", reference->n_vocab(),
                                                   " tokens, the model ", model.n_vocab()));
  }
  const int first = FirstScored(options);
  const size_t n_vocab = static_cast<size_t>(model.n_vocab());

  EvalAccumulator acc;
  std::vector<float> logits, ref_logits;
  const int n_chunks = static_cast<int>(chunks.size());
  for (int c = 0; c < n_chunks; ++c) {
    const std::vector<int32_t>& chunk = chunks[c];
    BF_RETURN_IF_ERROR(ChunkLogits(model, chunk, &logits));
    if (reference != nullptr) BF_RETURN_IF_ERROR(ChunkLogits(*reference, chunk, &ref_logits));
    // The scored targets are the text's tokens (chunk[0] may be BOS but is never a target).
    for (int j = first; j < ctx - 1; ++j) {
      std::span<const float> row(logits.data() + j * n_vocab, n_vocab);
      std::span<const float> ref_row;
      if (reference != nullptr) ref_row = std::span<const float>(ref_logits.data() + j * n_vocab, n_vocab);
      acc.Add(row, chunk[j + 1], ref_row);
    }
    if (progress) progress(c + 1, n_chunks, acc.Summary());
  }
  return acc.Summary();
}

}  // namespace bitfleet::worker

// Helpers for tensor-parallel tests, shared by the in-process (FakeGroup) unit tests and the
// MPI tests: synthetic models whose shapes split at a given TP degree, runners over a
// communicator, teacher-forced logits, generation through DistributedSampler, and the metrics
// TP=N is held to against TP=1 (docs/sharding.md, "Equivalence budget").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "sharding/communicator.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace bitfleet::tp_testing {

struct ModelSpec {
  std::string arch;  // "llama" | "bitnet" | "bitnet-b1.58" | "qwen2"
  DType type = DType::kF32;
  uint32_t n_embd = 256;
  uint32_t n_head = 4;
  uint32_t n_head_kv = 2;
  uint32_t n_ff = 1024;
  uint32_t n_layer = 2;
  uint32_t n_vocab = 1024;
  uint64_t seed = 7;

  std::string Label() const;  // "bitnet/tq2_0 e1024 h8/4 ff1024"
  bool tiny() const;          // the tiny preset's shape
};

// The tiny preset (n_embd 256, 4 heads / 2 KV heads, n_ff 1024, vocab 1024, 2 layers).
ModelSpec TinySpec(const std::string& arch, DType type);

// Models whose every matrix splits at `tp` for `type`: the tiny preset where its blocks allow
// (float types, Q8_0, Q4_0 at TP 2 and 4); wider rows for the 256-element ternary blocks; at
// TP=3 twelve heads over four KV heads (KV heads replicated with one slot per query head).
ModelSpec SpecFor(const std::string& arch, DType type, int tp);

// The llama and bitnet models of every type of the equivalence matrix at `tp`, and a qwen2 one
// (Q4_0).
std::vector<ModelSpec> MatrixFor(int tp);

// Writes the model into `dir` once (a later call with the same spec reuses the file; synthesis
// is a pure function of the spec) and returns its path.
StatusOr<std::string> SynthModel(const ModelSpec& spec, const std::string& dir);

// Test-sized limits (one thread) over `comm` (null: single rank); MakeRunner's options, for
// tests that build another runner (tests/gpu) on the same terms.
worker::RunnerOptions TestRunnerOptions(sharding::Communicator* comm, bool gather_logits);

// A runner over `comm` (null: single rank) with test-sized limits, one thread.
StatusOr<std::unique_ptr<worker::ModelRunner>> MakeRunner(const std::string& path, sharding::Communicator* comm,
                                                          bool gather_logits);

// Deterministic token ids in [3, n_vocab).
std::vector<int32_t> TestTokens(int n, int n_vocab, uint32_t seed);

// Greedy decoding, and the top-k / top-p / repetition-penalty mix the equivalence tests sample
// with (temperature 0.9, top-k 40, top-p 0.9, repeat penalty 1.1) under `seed`.
worker::SamplingParams GreedyParams();
worker::SamplingParams TopKTopPParams(uint64_t seed);

// Teacher-forced whole-row logits (rows × n_vocab) of each sequence, one step per sequence
// batched together. The runner must return whole rows (TP=1 or gather_logits).
StatusOr<std::vector<float>> TeacherForcedLogits(worker::StepRunner& runner,
                                                 const std::vector<std::vector<int32_t>>& sequences);

// `steps` tokens generated after `prompt`, sampling with DistributedSampler on the runner's
// vocabulary slice (or Sampler when `single_rank_sampler`; needs whole rows).
StatusOr<std::vector<int32_t>> Generate(worker::StepRunner& runner, const std::vector<int32_t>& prompt, int steps,
                                        const worker::SamplingParams& params, bool single_rank_sampler = false);

// The logits a greedy generation saw, computed along the path generation takes: `prompt` in one
// step, then each of generated[0..n-2] as its own decode step. Row j (whole rows: the runner
// must return them) is the distribution generated[j] was picked from.
StatusOr<std::vector<float>> DecodePathLogits(worker::StepRunner& runner, const std::vector<int32_t>& prompt,
                                              const std::vector<int32_t>& generated);

// One greedy step of a group's generation judged against a single-process reference, both over
// the reference row's max |logit|: `margin` is the reference's top logit minus its logit of
// the token the group picked (0 when the group picked the reference's argmax), `error` the
// largest difference between the group's own row at that step and the reference's row.
struct GreedyStepCheck {
  double margin = 0;
  double error = 0;
};

// Per step of greedy `generated` (after `prompt`): the reference's teacher-forced rows on the
// same context against `group_rows` (DecodePathLogits of the group).
StatusOr<std::vector<GreedyStepCheck>> CheckGreedySteps(worker::StepRunner& reference,
                                                        const std::vector<int32_t>& prompt,
                                                        const std::vector<int32_t>& generated,
                                                        const std::vector<float>& group_rows);

// How far logits `got` are from `want` (rows × n_vocab each).
struct Agreement {
  double max_relative_error = 0;  // max over rows of max|got - want| / max|want|
  double mean_kl = 0;             // mean over rows of KL(softmax(want) || softmax(got))
  double top1 = 0;                // fraction of rows whose argmax agrees
  // Over the rows whose argmax differs: the largest margin of want's argmax over got's argmax
  // (in want's logits), as a multiple of that row's max |got - want|. At most 2 when every
  // disagreement is a near-tie that the row's own error can flip (0 when none differs).
  double worst_flip_margin = 0;
};
Agreement Compare(const std::vector<float>& got, const std::vector<float>& want, size_t n_vocab);

// Types whose matmuls run on int8-quantized activations (the KL / top-1 budget applies).
bool Int8Activations(DType type);

// The equivalence budget of TP=N against TP=1 (docs/sharding.md explains each number).
// F32/F16 weights: float activations; only the summation order differs.
inline constexpr double kFloatMaxRelativeError = 1e-4;
// int8 activations: a rounding-level difference can flip an activation's int8 value, after
// which the quantization noise of later tokens is reshuffled (one process does the same to
// itself when its sums are reordered by one ulp). Per model, mean KL and a top-1 floor, and every
// row whose argmax differs must be a near-tie: TP=1's margin of its argmax over TP=N's at most
// kInt8MaxFlipMargin times that row's max |logit error| (the rule greedy tokens follow).
inline constexpr double kInt8MaxMeanKl = 5e-4;
inline constexpr double kInt8MinTop1PerModel = 0.98;
inline constexpr double kInt8MaxFlipMargin = 2.0;

// Builds a runner of the model at `path` over `comm` (null: single rank), TestRunnerOptions'
// limits: MakeRunner for the CPU, the CUDA runner in tests/gpu.
using RunnerFactory = std::function<StatusOr<std::unique_ptr<worker::StepRunner>>(
    const std::string& path, sharding::Communicator* comm, bool gather_logits)>;
StatusOr<std::unique_ptr<worker::StepRunner>> MakeCpuRunner(const std::string& path, sharding::Communicator* comm,
                                                            bool gather_logits);

// The in-process equivalence check: `tp` threads are the ranks of a FakeGroup (collectives time
// out after `timeout`), each running `make`'s runners over the model of `spec`; against the
// single-rank runner of `make`. Every rank must end with the same gathered teacher-forced rows
// and the same greedy and top-k / top-p tokens; greedy tokens must equal the single rank's, and
// the rows meet the budgets above (float: max relative error, and the same sampled tokens; int8
// activations: mean KL and top-1 per model). `what` prefixes the printed agreement line.
void ExpectTpMatchesSingleRank(const ModelSpec& spec, int tp, const RunnerFactory& make, const std::string& what,
                               std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace bitfleet::tp_testing

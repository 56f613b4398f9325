// The forward pass on one CUDA device: the GPU counterpart of worker/model_runner.h's
// ModelRunner for the llama, bitnet and bitnet-b1.58 architectures, alone or as one rank of a
// tensor-parallel group.
//
// Same Step contract as ModelRunner (a batch of sequences, each a prefill chunk or a decode
// token with its block table; logits of each sequence's last token, or of every new token when
// all_logits; same validation and errors), with the weights, activations and the paged KV cache
// on the device (kernels/cuda/, cache/kv_storage_cuda.h). The token embedding stays in the file
// mapping and is looked up on the host; the logit rows come back to host memory, where the
// samplers of worker/sampler.h read them.
//
// Numerics: the kernels' budgets of docs/cuda.md. Activations are quantized to int8 at the
// scaling of the weights they multiply as on the CPU (kernels::ActScalingFor: per token for
// ternary, per 32-column block for Q4_0 / Q4_1 / Q8_0), but norms, RoPE and float sums round
// differently, so logits agree with ModelRunner's to within float accumulation, not bit for bit
// (tests/gpu/cuda_model_runner_test.cc).
//
// Tensor parallelism (RunnerOptions::communicator of size > 1): the rank holds its slice of the
// sharding::ShardPlan as the CPU runner does (query heads, KV slots, FFN units, vocabulary) and
// all-reduces what the CPU runner all-reduces (row-parallel outputs, BitNet sub-norm sums of
// squares, per-token absmax of ternary inputs), so TP=N computes what TP=1 computes up to float
// summation order. An NCCL communicator reduces the device buffers in place, queued on the
// runner's stream (its deferred mode: the step waits once, at its end, with the communicator's
// deadline), so steps replay CUDA graphs as at TP=1; with an NCCL communicator of one rank the
// runner still all-reduces (identities), so one GPU runs this path. Any other backend (MPI, the
// in-process fake) is staged through page-locked host memory, waiting on the host, and steps
// then run without graphs. The token embedding is looked up whole on every rank (it is read
// from the file mapping, so the vocab-parallel all-reduce of the CPU runner is not needed).
//
// Status: the `gpu` tests pass on an H200 (scripts/gpu-check.sh, docs/cuda.md); tensor
// parallelism was written without a device and awaits its first run (docs/cuda.md).
// Thread-safety: one Step at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"
#include "worker/step_runner.h"

namespace bitfleet::worker {

class CudaModelRunnerImpl;

class CudaModelRunner final : public StepRunner {
 public:
  // Uploads this rank's weights of `file` to its CUDA device and allocates the KV cache and the
  // step buffers for `options` (threads is ignored). The device: the current one at TP=1; under
  // TP>1 the NCCL communicator's, else the node-local rank's (sharding/local_rank.h) modulo the
  // visible devices. FAILED_PRECONDITION without a usable device; INVALID_ARGUMENT for what
  // ModelRunner::Create rejects (among it a model that does not split at the group's size), a
  // weight type without a CUDA kernel (naming the tensor), or ranks sharing a device without a
  // given KV pool size (options.kv_blocks); UNIMPLEMENTED for an int8 KV cache;
  // RESOURCE_EXHAUSTED when the device memory does not suffice.
  static StatusOr<std::unique_ptr<CudaModelRunner>> Create(std::shared_ptr<const gguf::GgufFile> file,
                                                           const RunnerOptions& options);
  ~CudaModelRunner() override;
  CudaModelRunner(const CudaModelRunner&) = delete;
  CudaModelRunner& operator=(const CudaModelRunner&) = delete;

  // As ModelRunner::Step. The logits live in the runner's host buffer until the next Step.
  StatusOr<StepLogits> Step(std::span<const SequenceStep> batch) override;

  const model::ModelConfig& config() const override;
  const RunnerOptions& options() const override;  // with defaults resolved
  int n_vocab() const override;
  int tp_rank() const override;
  int tp_size() const override;
  sharding::Communicator& communicator() const override;
  sharding::Range vocab_slice() const override;
  bool logits_whole() const override;
  int kv_block_size() const override;
  int kv_blocks() const override;
  // The device-resident packed weights (what a decode step streams from device memory) plus
  // one embedding row.
  uint64_t weight_stream_bytes_per_token() const override;
  // Device bytes of the packed weights.
  uint64_t weight_resident_bytes() const override;
  // The embedding, looked up on the host from the file mapping.
  uint64_t weight_mapped_bytes() const override;
  // "cuda sm_90 (NVIDIA H200)".
  std::string kernel_variant() const override;

  // Steps replay a CUDA graph per (tokens, logit rows, attention key bound) once that shape has
  // come twice: decode steps, and prefill and mixed steps of a recurring shape (chunked prefill
  // at the step budget, a shared prompt's suffix); on by default, off with BITFLEET_CUDA_GRAPHS=0
  // or here, and always off when collectives are staged through the host. Replays compute
  // exactly what plain launches compute (tests/gpu/cuda_model_runner_test.cc).
  void set_step_graphs(bool on);
  bool step_graphs() const;  // false also after a failed capture (logged)
  int64_t step_graph_launches() const;

  // Norms fused with the int8 quantization of their output (and the residual add or the
  // squared-ReLU gate before them) where the projections they feed share one scaling (not the
  // BitNet sub-norms when the runner all-reduces, since their sums are reduced first); on by
  // default, off with BITFLEET_CUDA_FUSED_NORMS=0 or here. The same results bit for bit
  // (tests/gpu/cuda_model_runner_test.cc). Counts host-side fused-kernel launches.
  void set_fused_norms(bool on);
  bool fused_norms() const;
  int64_t fused_norm_launches() const;

  // RoPE of q and k and the KV-cache write in one kernel per layer (LaunchRopeWriteKv) instead
  // of three; off by default until measured on a device, on with BITFLEET_CUDA_FUSED_ROPE_KV=1
  // or here. The same results bit for bit (tests/gpu/cuda_model_runner_test.cc). Counts
  // host-side fused launches.
  void set_fused_rope_kv(bool on);
  bool fused_rope_kv() const;
  int64_t fused_rope_kv_launches() const;

 private:
  explicit CudaModelRunner(std::unique_ptr<CudaModelRunnerImpl> impl);
  std::unique_ptr<CudaModelRunnerImpl> impl_;
};

}  // namespace bitfleet::worker

// Internal to the worker: the shapes, scratch buffers and batch view one Step works on.
// Everything here is sized once at load time (StepScratch::Allocate) so Step never allocates.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cache/kv_storage.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "model/arch/model_config.h"
#include "sharding/communicator.h"
#include "worker/model_runner.h"

namespace bitfleet::worker {

// Layer shapes as held by this rank. At TP=1 the local and full sizes are equal; with a shard
// plan the head and FFN dims become the rank's slice while the *_full sizes keep the model's
// (the sub-norms divide the all-reduced sum of squares by the full size).
struct ModelDims {
  int n_embd = 0;
  int n_head = 0;      // query heads on this rank
  int n_head_kv = 0;   // KV heads on this rank
  int head_dim = 0;
  int rope_dim = 0;
  int n_ff = 0;        // FFN hidden size on this rank
  int q_dim_full = 0;  // n_head * head_dim over the whole group
  int n_ff_full = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  bool rope_neox = false;
  model::Activation activation = model::Activation::kSilu;

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }

  static ModelDims FromConfig(const model::ModelConfig& config);
};

// Activation buffers for up to `max_tokens` tokens (row-major, token-major).
struct StepScratch {
  std::vector<float> x;       // residual stream, tokens × n_embd
  std::vector<float> xn;      // normalized input of a block, tokens × n_embd
  std::vector<float> q;       // tokens × q_dim
  std::vector<float> k;       // tokens × kv_dim
  std::vector<float> v;       // tokens × kv_dim
  std::vector<float> attn;    // attention output, tokens × q_dim
  std::vector<float> gate;    // tokens × n_ff
  std::vector<float> up;      // tokens × n_ff
  std::vector<float> hidden;  // act(gate) * up, tokens × n_ff
  std::vector<float> proj;    // output of a row-parallel projection, tokens × n_embd
  std::vector<float> per_token;  // one float per token (absmax, sum of squares)
  std::vector<float> attn_scratch;  // threads × max_context (attention scores)
  int attn_scratch_stride = 0;
  // Shared-prefix decode attention (layer_ops.cc), sequences each: the candidates' order, one
  // group's rows, tables and positions, and which sequences it attended.
  std::vector<int32_t> attn_order;
  std::vector<const float*> attn_q;
  std::vector<float*> attn_out;
  std::vector<const int32_t*> attn_tables;
  std::vector<int32_t> attn_pos;
  std::vector<uint8_t> attn_done;
  kernels::QuantizedActivations qa_in;   // quantized block input (shared by column-parallel matmuls)
  kernels::QuantizedActivations qa_row;  // quantized row-parallel input
  // Batch metadata.
  std::vector<int32_t> positions;   // tokens
  std::vector<int32_t> seq_begin;   // sequences + 1: first token of each sequence
  std::vector<int32_t> logit_src;   // logit rows: which token each row comes from
  std::vector<int32_t> logit_begin; // sequences + 1: first logit row of each sequence
  std::vector<float> head_in;       // logit rows × n_embd (final-normed)
  std::vector<float> logits;        // logit rows × n_vocab

  void Allocate(const ModelDims& dims, const RunnerOptions& options, int n_vocab, int threads);
};

// What a layer's Forward sees for one Step.
struct StepContext {
  const ModelDims& dims;
  ThreadPool& pool;
  sharding::Communicator& comm;
  const cache::KvStorage& kv;
  StepScratch& s;
  std::span<const SequenceStep> batch;
  int n_tokens = 0;
};

}  // namespace bitfleet::worker

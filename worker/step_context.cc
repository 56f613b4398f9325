#include "worker/step_context.h"

#include <algorithm>

namespace bitfleet::worker {

ModelDims ModelDims::FromConfig(const model::ModelConfig& config) {
  ModelDims d;
  d.n_embd = static_cast<int>(config.n_embd);
  d.n_head = static_cast<int>(config.n_head);
  d.n_head_kv = static_cast<int>(config.n_head_kv);
  d.head_dim = static_cast<int>(config.head_dim);
  d.rope_dim = static_cast<int>(config.rope_dim ? config.rope_dim : config.head_dim);
  d.n_ff = static_cast<int>(config.n_ff);
  d.q_dim_full = d.n_head * d.head_dim;
  d.n_ff_full = d.n_ff;
  d.rms_eps = config.rms_eps;
  d.rope_freq_base = config.rope_freq_base;
  d.rope_neox = config.rope_type == model::RopeType::kNeox;
  d.activation = config.activation;
  return d;
}

void StepScratch::Allocate(const ModelDims& d, const RunnerOptions& o, int n_vocab, int threads) {
  const size_t t = static_cast<size_t>(o.max_step_tokens);
  x.assign(t * d.n_embd, 0.0f);
  xn.assign(t * d.n_embd, 0.0f);
  q.assign(t * d.q_dim(), 0.0f);
  k.assign(t * d.kv_dim(), 0.0f);
  v.assign(t * d.kv_dim(), 0.0f);
  attn.assign(t * d.q_dim(), 0.0f);
  gate.assign(t * d.n_ff, 0.0f);
  up.assign(t * d.n_ff, 0.0f);
  hidden.assign(t * d.n_ff, 0.0f);
  proj.assign(t * d.n_embd, 0.0f);
  per_token.assign(t, 0.0f);
  attn_scratch_stride = o.max_context;
  attn_scratch.assign(static_cast<size_t>(threads) * attn_scratch_stride, 0.0f);
  const size_t seqs = static_cast<size_t>(o.max_step_sequences);
  attn_order.assign(seqs, 0);
  attn_q.assign(seqs, nullptr);
  attn_out.assign(seqs, nullptr);
  attn_tables.assign(seqs, nullptr);
  attn_pos.assign(seqs, 0);
  attn_done.assign(seqs, 0);
  const uint64_t max_cols = std::max({d.n_embd, d.q_dim(), d.n_ff});
  qa_in.Reserve(o.max_step_tokens, max_cols);
  qa_row.Reserve(std::max(o.max_step_tokens, o.max_logit_rows), max_cols);
  positions.assign(t, 0);
  seq_begin.assign(o.max_step_sequences + 1, 0);
  logit_src.assign(o.max_logit_rows, 0);
  logit_begin.assign(o.max_step_sequences + 1, 0);
  head_in.assign(static_cast<size_t>(o.max_logit_rows) * d.n_embd, 0.0f);
  logits.assign(static_cast<size_t>(o.max_logit_rows) * n_vocab, 0.0f);
}

}  // namespace bitfleet::worker

#include "worker/layer_ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <iterator>
#include <span>

#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace bitfleet::worker {
namespace {

void ApplyScale(StepContext& ctx, const Projection& w, float* out) {
  if (!w.has_scale) return;
  const size_t rows = w.rows();
  ForTokenRanges(ctx, [&](int t0, int t1) {
    for (size_t i = t0 * rows; i < t1 * rows; ++i) out[i] *= w.scale;
  });
}

// Shared prompt prefixes shorter than this are attended per sequence: the grouped pass pays
// off over many positions.
constexpr int kMinSharedPositions = 64;

std::atomic<int64_t> g_shared_prefix_groups{0};

// Decode tokens of sequences that share their leading KV blocks through the prefix cache (many
// streams on one long system prompt): each group's shared positions (at least
// kMinSharedPositions) are attended for all its sequences together (kernels::
// AttentionSharedPrefix), which reads and converts every shared K/V row once per up to 32 query
// rows instead of once per sequence. Marks the sequences it attended in s.attn_done (all cleared
// first).
void AttendSharedPrefixes(StepContext& ctx, const kernels::PagedKv& kv, float scale) {
  StepScratch& s = ctx.s;
  const int n_seqs = static_cast<int>(ctx.batch.size());
  std::fill(s.attn_done.begin(), s.attn_done.begin() + n_seqs, 0);
  int32_t* order = s.attn_order.data();
  int n = 0;
  for (int i = 0; i < n_seqs; ++i) {
    const SequenceStep& step = ctx.batch[i];
    if (step.tokens.size() == 1 && step.start_pos >= kMinSharedPositions && !step.block_table.empty()) order[n++] = i;
  }
  if (n < 2) return;
  // A sequence's blocks that can be shared: whole blocks below its new token.
  auto usable = [&](int i) {
    const SequenceStep& step = ctx.batch[i];
    return step.block_table.first(std::min(step.block_table.size(), static_cast<size_t>(step.start_pos / kv.block_size)));
  };
  // In lexicographic order of the block tables, the sequences sharing any prefix are contiguous,
  // and the prefix a run of them shares is the shortest one shared by two neighbours.
  std::sort(order, order + n, [&](int a, int b) {
    const std::span<const int32_t> ta = usable(a), tb = usable(b);
    return std::lexicographical_compare(ta.begin(), ta.end(), tb.begin(), tb.end());
  });
  auto common_blocks = [&](int a, int b) {
    const std::span<const int32_t> ta = usable(a), tb = usable(b);
    return static_cast<size_t>(std::mismatch(ta.begin(), ta.end(), tb.begin(), tb.end()).first - ta.begin());
  };
  const size_t min_blocks = static_cast<size_t>((kMinSharedPositions + kv.block_size - 1) / kv.block_size);
  const int q_dim = ctx.dims.q_dim();
  for (int a = 0; a < n;) {
    int b = a + 1;
    size_t shared_blocks = usable(order[a]).size();
    for (; b < n; ++b) {
      const size_t common = std::min(shared_blocks, common_blocks(order[b - 1], order[b]));
      if (common < min_blocks) break;
      shared_blocks = common;
    }
    if (b - a >= 2) {
      const int g = b - a;
      for (int m = 0; m < g; ++m) {
        const int i = order[a + m];
        const size_t row = static_cast<size_t>(s.seq_begin[i]) * q_dim;
        s.attn_q[m] = s.q.data() + row;
        s.attn_out[m] = s.attn.data() + row;
        s.attn_tables[m] = ctx.batch[i].block_table.data();
        s.attn_pos[m] = ctx.batch[i].start_pos;
        s.attn_done[i] = 1;
      }
      kernels::AttentionSharedPrefix(s.attn_q.data(), g, ctx.dims.n_head, kv, s.attn_tables.data(), s.attn_pos.data(),
                                     static_cast<int>(shared_blocks) * kv.block_size, scale, s.attn_out.data(),
                                     ctx.pool);
      g_shared_prefix_groups.fetch_add(1, std::memory_order_relaxed);
    }
    a = b;
  }
}

// Attention of every sequence of the step not attended by AttendSharedPrefixes, split over the
// pool by token ranges: a prefill chunk is divided between threads (its K/V are already in the
// cache, so each token range is independent), decode tokens of different sequences run in
// parallel.
struct AttentionJob {
  StepContext* ctx;
  kernels::PagedKv kv;
  float scale;

  void Run(int thread, int n_threads) const {
    const StepScratch& s = ctx->s;
    const int n_tokens = ctx->n_tokens;
    int t = static_cast<int>(static_cast<int64_t>(n_tokens) * thread / n_threads);
    const int t_end = static_cast<int>(static_cast<int64_t>(n_tokens) * (thread + 1) / n_threads);
    if (t >= t_end) return;
    float* scratch = ctx->s.attn_scratch.data() + static_cast<size_t>(thread) * s.attn_scratch_stride;
    const int q_dim = ctx->dims.q_dim();
    const int n_seqs = static_cast<int>(ctx->batch.size());
    // The sequence holding token t: the last seq_begin <= t.
    int seq = static_cast<int>(std::upper_bound(s.seq_begin.begin(), s.seq_begin.begin() + n_seqs + 1, t) -
                               s.seq_begin.begin()) - 1;
    while (t < t_end) {
      const int seq_end = s.seq_begin[seq + 1];
      const int run_end = std::min(t_end, seq_end);
      if (s.attn_done[seq]) {
        t = run_end;
        ++seq;
        continue;
      }
      const SequenceStep& step = ctx->batch[seq];
      const int pos0 = step.start_pos + (t - s.seq_begin[seq]);
      kernels::AttentionPaged(s.q.data() + static_cast<size_t>(t) * q_dim, run_end - t, ctx->dims.n_head, kv,
                              step.block_table.data(), pos0, scale,
                              ctx->s.attn.data() + static_cast<size_t>(t) * q_dim, scratch);
      t = run_end;
      ++seq;
    }
  }
};

// Per-token absmax of x (tokens × cols) into ctx.s.per_token.
float* TokenAbsMax(StepContext& ctx, const float* x, uint64_t cols) {
  float* absmax = ctx.s.per_token.data();
  ForTokenRanges(ctx, [&](int t0, int t1) { kernels::ComputeAbsMax(x + t0 * cols, t1 - t0, cols, absmax + t0); });
  return absmax;
}

// Whether `w` multiplies ctx.s.qa_in: quantized, at the scaling qa_in was quantized with.
bool ReadsQuantizedInput(const StepContext& ctx, const Projection& w) {
  return w.quantized() && kernels::ActScalingFor(w.weight->type()) == ctx.s.qa_in.scaling;
}

// The first quantized weight of a block's input projections (QuantizeInput's scaling), or null.
const Projection* FirstQuantized(std::initializer_list<const Projection*> ws) {
  for (const Projection* w : ws) {
    if (w->quantized()) return w;
  }
  return nullptr;
}

}  // namespace

int64_t SharedPrefixAttentionGroups() { return g_shared_prefix_groups.load(std::memory_order_relaxed); }

void ForTokenRanges(StepContext& ctx, FunctionRef<void(int, int)> fn) {
  const int n = ctx.n_tokens;
  if (n < kernels::kMinParallelRowTokens || ctx.pool.size() == 1) {
    if (n > 0) fn(0, n);
    return;
  }
  ctx.pool.Run([n, &fn](int index, int n_indices) {
    const int t0 = static_cast<int>(int64_t{n} * index / n_indices);
    const int t1 = static_cast<int>(int64_t{n} * (index + 1) / n_indices);
    if (t0 < t1) fn(t0, t1);
  });
}

void NormalizeInput(StepContext& ctx, const std::vector<float>& weight) {
  const int dim = ctx.dims.n_embd;
  const float* x = ctx.s.x.data();
  float* xn = ctx.s.xn.data();
  ForTokenRanges(ctx, [&](int t0, int t1) {
    kernels::RmsNorm(x + int64_t{t0} * dim, weight.data(), t1 - t0, dim, ctx.dims.rms_eps, xn + int64_t{t0} * dim);
  });
}

void QuantizeInput(StepContext& ctx, const Projection& w) {
  const float* xn = ctx.s.xn.data();
  if (kernels::ActScalingFor(w.weight->type()) == kernels::ActScaling::kPerBlock) {
    kernels::QuantizeActivationsPerBlock(xn, ctx.n_tokens, ctx.dims.n_embd, &ctx.s.qa_in, ctx.pool);
    return;
  }
  const float* absmax = TokenAbsMax(ctx, xn, ctx.dims.n_embd);
  kernels::QuantizeActivations(xn, ctx.n_tokens, ctx.dims.n_embd, absmax, &ctx.s.qa_in, ctx.pool);
}

void ProjectColumns(StepContext& ctx, std::initializer_list<std::pair<const Projection*, float*>> projections) {
  kernels::QuantMatMulJob jobs[4];
  bool grouped = projections.size() <= std::size(jobs);
  for (const auto& [w, out] : projections) grouped = grouped && ReadsQuantizedInput(ctx, *w);
  if (!grouped) {
    for (const auto& [w, out] : projections) ProjectColumn(ctx, *w, ctx.s.xn.data(), out);
    return;
  }
  size_t n = 0;
  for (const auto& [w, out] : projections) jobs[n++] = {w->weight.get(), out};
  kernels::MatMulQuantizedGroup(std::span<const kernels::QuantMatMulJob>(jobs, n), ctx.s.qa_in, ctx.pool);
  for (const auto& [w, out] : projections) ApplyScale(ctx, *w, out);
}

void ProjectColumn(StepContext& ctx, const Projection& w, const float* x, float* out) {
  // A quantized weight reads the shared int8 copy of xn made by QuantizeInput.
  if (x == ctx.s.xn.data() && ReadsQuantizedInput(ctx, w)) {
    kernels::MatMulQuantized(*w.weight, ctx.s.qa_in, out, ctx.pool);
  } else {
    kernels::MatMul(*w.weight, x, ctx.n_tokens, out, ctx.pool, &ctx.s.qa_row);
  }
  ApplyScale(ctx, w, out);
}

Status ProjectRow(StepContext& ctx, const Projection& w, const float* x, float* out) {
  const uint64_t cols = w.cols();
  if (w.quantized()) {
    if (kernels::ActScalingFor(w.weight->type()) == kernels::ActScaling::kPerBlock) {
      kernels::QuantizeActivationsPerBlock(x, ctx.n_tokens, cols, &ctx.s.qa_row, ctx.pool);
    } else {
      float* absmax = TokenAbsMax(ctx, x, cols);
      BF_RETURN_IF_ERROR(ctx.comm.AllReduceMax(absmax, ctx.n_tokens));
      kernels::QuantizeActivations(x, ctx.n_tokens, cols, absmax, &ctx.s.qa_row, ctx.pool);
    }
    kernels::MatMulQuantized(*w.weight, ctx.s.qa_row, out, ctx.pool);
  } else {
    kernels::MatMul(*w.weight, x, ctx.n_tokens, out, ctx.pool, &ctx.s.qa_row);
  }
  ApplyScale(ctx, w, out);
  return ctx.comm.AllReduceSum(out, static_cast<size_t>(ctx.n_tokens) * w.rows());
}

Status SubNorm(StepContext& ctx, const std::vector<float>& weight, const float* x, float* out, int dim,
               int full_dim) {
  float* sum_sq = ctx.s.per_token.data();
  ForTokenRanges(ctx, [&](int t0, int t1) { kernels::SumSquares(x + int64_t{t0} * dim, t1 - t0, dim, sum_sq + t0); });
  BF_RETURN_IF_ERROR(ctx.comm.AllReduceSum(sum_sq, ctx.n_tokens));
  ForTokenRanges(ctx, [&](int t0, int t1) {
    const int64_t off = int64_t{t0} * dim;
    kernels::RmsNormWithSumSquares(x + off, weight.data(), t1 - t0, dim, sum_sq + t0, full_dim, ctx.dims.rms_eps,
                                   out + off);
  });
  return absl::OkStatus();
}

namespace {

// row[i] += bias[i] over the bias's length (one token's projection output).
void AddBias(const std::vector<float>& bias, float* row) {
  for (size_t i = 0; i < bias.size(); ++i) row[i] += bias[i];
}

}  // namespace

void SelfAttention(StepContext& ctx, const LayerWeights& w, int layer) {
  const ModelDims& d = ctx.dims;
  StepScratch& s = ctx.s;
  if (const Projection* first = FirstQuantized({&w.wq, &w.wk, &w.wv})) QuantizeInput(ctx, *first);
  ProjectColumns(ctx, {{&w.wq, s.q.data()}, {&w.wk, s.k.data()}, {&w.wv, s.v.data()}});
  ForTokenRanges(ctx, [&](int t0, int t1) {
    if (!w.q_bias.empty()) {  // Qwen2: biases before RoPE
      for (int t = t0; t < t1; ++t) {
        AddBias(w.q_bias, s.q.data() + int64_t{t} * d.q_dim());
        AddBias(w.k_bias, s.k.data() + int64_t{t} * d.kv_dim());
        AddBias(w.v_bias, s.v.data() + int64_t{t} * d.kv_dim());
      }
    }
    const int32_t* positions = s.positions.data() + t0;
    kernels::Rope(s.q.data() + int64_t{t0} * d.q_dim(), positions, t1 - t0, d.n_head, d.head_dim, d.rope_dim,
                  d.rope_freq_base, d.rope_neox);
    kernels::Rope(s.k.data() + int64_t{t0} * d.kv_dim(), positions, t1 - t0, d.n_head_kv, d.head_dim, d.rope_dim,
                  d.rope_freq_base, d.rope_neox);
  });

  const kernels::PagedKv kv = ctx.kv.Layer(layer);
  const size_t kv_dim = d.kv_dim();
  for (size_t i = 0; i < ctx.batch.size(); ++i) {
    const SequenceStep& step = ctx.batch[i];
    const size_t begin = s.seq_begin[i];
    kernels::WriteKv(kv, step.block_table.data(), step.start_pos, static_cast<int>(step.tokens.size()),
                     s.k.data() + begin * kv_dim, s.v.data() + begin * kv_dim);
  }

  AttentionJob job{&ctx, kv, 1.0f / std::sqrt(static_cast<float>(d.head_dim))};
  if (ctx.batch.size() == 1) {
    // One sequence (a decode token or a prefill chunk): the kernel's pooled overload splits
    // (token, head group) units over the threads, interleaved so later tokens' longer
    // contexts spread evenly; splitting by token ranges would leave a single decode token
    // on one thread.
    const SequenceStep& step = ctx.batch[0];
    kernels::AttentionPaged(s.q.data(), ctx.n_tokens, d.n_head, kv, step.block_table.data(), step.start_pos,
                            job.scale, s.attn.data(), s.attn_scratch.data(), ctx.pool);
  } else {
    AttendSharedPrefixes(ctx, kv, job.scale);
    ctx.pool.Run([&job](int thread, int n_threads) { job.Run(thread, n_threads); });
  }
}

void GatedFeedForward(StepContext& ctx, const LayerWeights& w) {
  StepScratch& s = ctx.s;
  if (const Projection* first = FirstQuantized({&w.w_gate, &w.w_up})) QuantizeInput(ctx, *first);
  ProjectColumns(ctx, {{&w.w_gate, s.gate.data()}, {&w.w_up, s.up.data()}});
  const int64_t n_ff = ctx.dims.n_ff;
  const bool relu2 = ctx.dims.activation == model::Activation::kRelu2;
  ForTokenRanges(ctx, [&](int t0, int t1) {
    const int64_t off = t0 * n_ff;
    const int64_t n = (t1 - t0) * n_ff;
    if (relu2) {
      kernels::Relu2Mul(s.gate.data() + off, s.up.data() + off, n, s.hidden.data() + off);
    } else {
      kernels::SiluMul(s.gate.data() + off, s.up.data() + off, n, s.hidden.data() + off);
    }
  });
}

void AddResidual(StepContext& ctx) {
  const int64_t dim = ctx.dims.n_embd;
  float* x = ctx.s.x.data();
  const float* proj = ctx.s.proj.data();
  ForTokenRanges(ctx, [&](int t0, int t1) {
    for (int64_t i = t0 * dim; i < t1 * dim; ++i) x[i] += proj[i];
  });
}

}  // namespace bitfleet::worker

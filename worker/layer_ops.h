// Internal to the worker: building blocks of a decoder layer shared by every architecture.
// Each works on all tokens of the step at once; the Communicator calls are where tensor
// parallelism all-reduces (no-ops at TP=1).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "core/function_ref.h"
#include "core/status.h"
#include "worker/decoder_layers.h"
#include "worker/step_context.h"

namespace bitfleet::worker {

// Runs fn(t0, t1) over the step's tokens: one contiguous range per pool thread, or all tokens
// on the calling thread below kernels::kMinParallelRowTokens (a dispatch would cost more than
// the rows). For the row-wise ops between the matmuls, which would otherwise leave the other
// threads waiting.
void ForTokenRanges(StepContext& ctx, FunctionRef<void(int, int)> fn);

// Groups of sequences whose shared prompt prefix SelfAttention has attended together, since
// the process started (all layers and runners; for tests and diagnostics).
int64_t SharedPrefixAttentionGroups();

// ctx.s.xn = RmsNorm(ctx.s.x) with `weight` (n_embd).
void NormalizeInput(StepContext& ctx, const std::vector<float>& weight);

// Column-parallel projections (input replicated on every rank, so its absmax is local).
// QuantizeInput quantizes ctx.s.xn once into ctx.s.qa_in at the activation scaling `w` takes
// (kernels::ActScalingFor); ProjectColumn of a quantized weight of that scaling with x ==
// ctx.s.xn reads that copy (call QuantizeInput after every change of xn), any other input is
// quantized inside the matmul. out = scale * (W x), tokens × w.rows().
void QuantizeInput(StepContext& ctx, const Projection& w);
void ProjectColumn(StepContext& ctx, const Projection& w, const float* x, float* out);
// ProjectColumn(ctx, *w, ctx.s.xn, out) for each (w, out) pair (at most 4). When every weight
// reads ctx.s.qa_in they run as one kernels::MatMulQuantizedGroup (one parallel pass, one
// meeting of the threads instead of one per weight); the results are the same either way.
void ProjectColumns(StepContext& ctx, std::initializer_list<std::pair<const Projection*, float*>> projections);

// Row-parallel projection of `x` (tokens × w.cols(), this rank's slice of the input), the
// output all-reduced (sum). Per-token activations (ternary weights) take the all-reduced (max)
// absmax of the full row, so every rank scales as TP=1 does; per-block ones (Q4/Q8) need no
// all-reduce, the slice being whole blocks.
Status ProjectRow(StepContext& ctx, const Projection& w, const float* x, float* out);

// BitNet sub-norm on the sharded dimension: out = RmsNorm(x) * weight where the per-token sum
// of squares over the local `dim` values is all-reduced (sum) and divided by `full_dim`.
// x (tokens × dim) and out must not overlap.
Status SubNorm(StepContext& ctx, const std::vector<float>& weight, const float* x, float* out, int dim,
               int full_dim);

// Q/K/V of ctx.s.xn, RoPE, K/V appended to the paged cache of `layer`, causal attention of
// every sequence over its cached positions; result in ctx.s.attn (tokens × q_dim). Decode tokens
// of sequences sharing at least 64 leading positions' blocks (a prompt prefix shared through the
// prefix cache) attend those positions together (kernels::AttentionSharedPrefix).
void SelfAttention(StepContext& ctx, const LayerWeights& w, int layer);

// ctx.s.hidden = act(gate(xn)) * up(xn), the activation from ctx.dims.
void GatedFeedForward(StepContext& ctx, const LayerWeights& w);

// The residual add after a projection: ctx.s.x += ctx.s.proj (tokens × n_embd).
void AddResidual(StepContext& ctx);

}  // namespace bitfleet::worker

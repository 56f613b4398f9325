// Public ops of kernels/ops.h on top of the variant helpers (kernels/cpu/kernel_table.h).
#include <algorithm>
#include <cmath>

#include "kernels/cpu/matmul_cpu.h"
#include "kernels/ref/ops_ref.h"

namespace bitfleet::kernels {
namespace cpu {
namespace {

// Stack buffers of the attention kernel: accumulators (query heads × head_dim) and scores
// (query heads × keys of one chunk).
constexpr int kAttnFloats = 4096;
constexpr int kMaxHeadsPerUnit = 64;

// Attention of one query token for the nq query heads that share KV head `kv_head` (q and out:
// nq × head_dim, contiguous), over positions 0..n_ctx-1. Online softmax (running max and sum
// per head, accumulators rescaled when the max grows), one paged block's run of keys at a
// time, so every K and V row is converted once for all nq heads and no score buffer of the
// context length is needed.
void AttendGroup(const CpuKernels& k, const float* q, int nq, const PagedKv& kv, const int32_t* block_table,
                 int kv_head, int n_ctx, float scale, float* out) {
  const int hd = kv.head_dim;
  float acc[kAttnFloats];
  float s[kAttnFloats];
  float m[kMaxHeadsPerUnit];
  float l[kMaxHeadsPerUnit];
  std::fill(acc, acc + nq * hd, 0.0f);
  std::fill(m, m + nq, -INFINITY);
  std::fill(l, l + nq, 0.0f);
  const int chunk_cap = std::max(1, kAttnFloats / nq);
  const int64_t stride = int64_t{kv.n_kv_heads} * hd;
  for (int j0 = 0; j0 < n_ctx;) {
    const int n = std::min({kv.block_size - j0 % kv.block_size, n_ctx - j0, chunk_cap});
    const uint64_t off = ref::PagedKvOffset(kv, block_table, j0, kv_head);
    k.qk_f16(q, nq, hd, kv.k + off, stride, n, scale, s);
    for (int i = 0; i < nq; ++i) {
      float* si = s + i * n;
      const float chunk_max = *std::max_element(si, si + n);
      if (chunk_max > m[i]) {
        const float f = std::exp(m[i] - chunk_max);  // 0 on the first chunk
        l[i] *= f;
        for (int d = 0; d < hd; ++d) acc[i * hd + d] *= f;
        m[i] = chunk_max;
      }
      l[i] += k.exp_shift_sum(si, n, m[i]);
    }
    k.pv_f16(s, nq, n, kv.v + off, stride, hd, acc);
    j0 += n;
  }
  for (int i = 0; i < nq; ++i) {
    const float inv = 1.0f / l[i];
    for (int d = 0; d < hd; ++d) out[i * hd + d] = acc[i * hd + d] * inv;
  }
}

}  // namespace

void RmsNormWith(const CpuKernels& k, const float* x, const float* weight, int n_tokens, int dim, float eps, float* y) {
  for (int t = 0; t < n_tokens; ++t) {
    const int64_t off = int64_t{t} * dim;
    const float mean_sq = k.sum_squares(x + off, dim) / static_cast<float>(dim);
    k.scale_mul(x + off, weight, 1.0f / std::sqrt(mean_sq + eps), dim, y + off);
  }
}

void SumSquaresWith(const CpuKernels& k, const float* x, int n_tokens, int dim, float* sum_sq) {
  for (int t = 0; t < n_tokens; ++t) sum_sq[t] = k.sum_squares(x + int64_t{t} * dim, dim);
}

void RmsNormWithSumSquaresWith(const CpuKernels& k, const float* x, const float* weight, int n_tokens, int dim,
                               const float* sum_sq, int full_dim, float eps, float* y) {
  for (int t = 0; t < n_tokens; ++t) {
    const int64_t off = int64_t{t} * dim;
    const float mean_sq = sum_sq[t] / static_cast<float>(full_dim);
    k.scale_mul(x + off, weight, 1.0f / std::sqrt(mean_sq + eps), dim, y + off);
  }
}

void SoftmaxWith(const CpuKernels& k, float* x, int n) {
  if (n <= 0) return;
  const float m = *std::max_element(x, x + n);
  const float inv_sum = 1.0f / k.exp_shift_sum(x, n, m);
  for (int i = 0; i < n; ++i) x[i] *= inv_sum;
}

void SiluMulWith(const CpuKernels& k, const float* gate, const float* up, int64_t n, float* out) {
  k.silu_mul(gate, up, n, out);
}

void Relu2MulWith(const CpuKernels& k, const float* gate, const float* up, int64_t n, float* out) {
  k.relu2_mul(gate, up, n, out);
}

void WriteKvWith(const CpuKernels& k, const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens,
                 const float* kk, const float* v) {
  const int64_t row = int64_t{kv.n_kv_heads} * kv.head_dim;
  for (int t = 0; t < n_tokens; ++t) {
    for (int g = 0; g < kv.n_kv_heads; ++g) {
      const uint64_t off = ref::PagedKvOffset(kv, block_table, pos0 + t, g);
      const int64_t src = t * row + int64_t{g} * kv.head_dim;
      k.f32_to_f16(kk + src, kv.head_dim, kv.k + off);
      k.f32_to_f16(v + src, kv.head_dim, kv.v + off);
    }
  }
}

void AttentionPagedWith(const CpuKernels& k, const float* q, int n_tokens, int n_heads, const PagedKv& kv,
                        const int32_t* block_table, int pos0, float scale, float* out, float* scratch,
                        ThreadPool* pool) {
  (void)scratch;  // the online-softmax kernel needs none; kept in the API for compatibility
  const int hd = kv.head_dim;
  if (hd > kAttnFloats || n_tokens <= 0) {
    if (n_tokens > 0) ref::AttentionPagedRef(q, n_tokens, n_heads, kv, block_table, pos0, scale, out);
    return;
  }
  const int group = n_heads / kv.n_kv_heads;
  const int threads = pool != nullptr ? pool->size() : 1;
  // Query heads per unit: the whole GQA group (shares K/V conversion) unless that leaves
  // threads idle or overflows the stack buffers; always a divisor of the group.
  int per_unit = group;
  auto fits = [&](int nq) { return nq <= kMaxHeadsPerUnit && nq * hd <= kAttnFloats; };
  while (per_unit > 1 && (!fits(per_unit) || int64_t{n_tokens} * n_heads / per_unit < threads)) {
    int next = per_unit - 1;
    while (group % next != 0) --next;
    per_unit = next;
  }
  const int units_per_token = n_heads / per_unit;
  const int64_t units = int64_t{n_tokens} * units_per_token;
  auto run = [&](int index, int count) {
    // Units interleave over threads: later tokens attend to more keys, so contiguous ranges
    // would leave the last thread with most of the work.
    for (int64_t u = index; u < units; u += count) {
      const int t = static_cast<int>(u / units_per_token);
      const int h0 = static_cast<int>(u % units_per_token) * per_unit;
      const int64_t off = (int64_t{t} * n_heads + h0) * hd;
      AttendGroup(k, q + off, per_unit, kv, block_table, h0 / group, pos0 + t + 1, scale, out + off);
    }
  };
  if (pool == nullptr || threads == 1 || units == 1) {
    run(0, 1);
  } else {
    pool->Run(run);
  }
}

}  // namespace cpu

void RmsNorm(const float* x, const float* weight, int n_tokens, int dim, float eps, float* y) {
  cpu::RmsNormWith(cpu::ActiveKernels(), x, weight, n_tokens, dim, eps, y);
}

void SumSquares(const float* x, int n_tokens, int dim, float* sum_sq) {
  cpu::SumSquaresWith(cpu::ActiveKernels(), x, n_tokens, dim, sum_sq);
}

void RmsNormWithSumSquares(const float* x, const float* weight, int n_tokens, int dim, const float* sum_sq,
                           int full_dim, float eps, float* y) {
  cpu::RmsNormWithSumSquaresWith(cpu::ActiveKernels(), x, weight, n_tokens, dim, sum_sq, full_dim, eps, y);
}

void Rope(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim, int rot_dim, float freq_base,
          bool neox) {
  // cos/sin once per token (shared by every head), angles in double as in the reference.
  constexpr int kMaxPairs = 512;
  const int half = rot_dim / 2;
  if (half > kMaxPairs) {
    ref::RopeRef(x, positions, n_tokens, n_heads, head_dim, rot_dim, freq_base, neox);
    return;
  }
  float cos_t[kMaxPairs];
  float sin_t[kMaxPairs];
  for (int t = 0; t < n_tokens; ++t) {
    for (int i = 0; i < half; ++i) {
      const double theta =
          positions[t] * std::pow(static_cast<double>(freq_base), -2.0 * i / static_cast<double>(rot_dim));
      cos_t[i] = static_cast<float>(std::cos(theta));
      sin_t[i] = static_cast<float>(std::sin(theta));
    }
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + (int64_t{t} * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const float x0 = xh[i0];
        const float x1 = xh[i1];
        xh[i0] = x0 * cos_t[i] - x1 * sin_t[i];
        xh[i1] = x0 * sin_t[i] + x1 * cos_t[i];
      }
    }
  }
}

void Softmax(float* x, int n) { cpu::SoftmaxWith(cpu::ActiveKernels(), x, n); }

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  cpu::SiluMulWith(cpu::ActiveKernels(), gate, up, n, out);
}

void Relu2Mul(const float* gate, const float* up, int64_t n, float* out) {
  cpu::Relu2MulWith(cpu::ActiveKernels(), gate, up, n, out);
}

void WriteKv(const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens, const float* k, const float* v) {
  cpu::WriteKvWith(cpu::ActiveKernels(), kv, block_table, pos0, n_tokens, k, v);
}

void AttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table, int pos0,
                    float scale, float* out, float* scratch) {
  cpu::AttentionPagedWith(cpu::ActiveKernels(), q, n_tokens, n_heads, kv, block_table, pos0, scale, out, scratch,
                          nullptr);
}

void AttentionPaged(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table, int pos0,
                    float scale, float* out, float* scratch, ThreadPool& pool) {
  cpu::AttentionPagedWith(cpu::ActiveKernels(), q, n_tokens, n_heads, kv, block_table, pos0, scale, out, scratch,
                          &pool);
}

}  // namespace bitfleet::kernels

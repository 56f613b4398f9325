#include "kernels/ref/ops_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/fp16.h"
#include "kernels/ref/matmul_ref.h"

namespace bitfleet::kernels::ref {

void SumSquaresRef(const float* x, int n_tokens, int dim, float* sum_sq) {
  for (int t = 0; t < n_tokens; ++t) {
    double s = 0.0;
    for (int i = 0; i < dim; ++i) s += static_cast<double>(x[int64_t{t} * dim + i]) * x[int64_t{t} * dim + i];
    sum_sq[t] = static_cast<float>(s);
  }
}

void RmsNormWithSumSquaresRef(const float* x, const float* weight, int n_tokens, int dim, const float* sum_sq,
                              int full_dim, float eps, float* y) {
  for (int t = 0; t < n_tokens; ++t) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(sum_sq[t]) / full_dim + eps);
    for (int i = 0; i < dim; ++i) {
      const int64_t k = int64_t{t} * dim + i;
      y[k] = static_cast<float>(x[k] * scale * weight[i]);
    }
  }
}

void RmsNormRef(const float* x, const float* weight, int n_tokens, int dim, float eps, float* y) {
  for (int t = 0; t < n_tokens; ++t) {
    const float* xt = x + int64_t{t} * dim;
    double s = 0.0;
    for (int i = 0; i < dim; ++i) s += static_cast<double>(xt[i]) * xt[i];
    const double scale = 1.0 / std::sqrt(s / dim + eps);
    for (int i = 0; i < dim; ++i) y[int64_t{t} * dim + i] = static_cast<float>(xt[i] * scale * weight[i]);
  }
}

void RopeRef(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim, int rot_dim, float freq_base,
             bool neox) {
  const int half = rot_dim / 2;
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + (int64_t{t} * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const double theta =
            positions[t] * std::pow(static_cast<double>(freq_base), -2.0 * i / static_cast<double>(rot_dim));
        const double c = std::cos(theta);
        const double s = std::sin(theta);
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const double x0 = xh[i0];
        const double x1 = xh[i1];
        xh[i0] = static_cast<float>(x0 * c - x1 * s);
        xh[i1] = static_cast<float>(x0 * s + x1 * c);
      }
    }
  }
}

void SoftmaxRef(float* x, int n) {
  if (n <= 0) return;
  double m = x[0];
  for (int i = 1; i < n; ++i) m = std::max(m, static_cast<double>(x[i]));
  std::vector<double> e(n);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += (e[i] = std::exp(x[i] - m));
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>(e[i] / sum);
}

void SiluMulRef(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    out[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

void Relu2MulRef(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float r = gate[i] > 0.0f ? gate[i] : 0.0f;
    out[i] = (r * r) * up[i];
  }
}

int64_t ArgMaxRef(const float* x, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) continue;
    if (best < 0 || x[i] > x[best]) best = i;  // strict: ties keep the lower index
  }
  return best < 0 ? 0 : best;
}

void QuantizeKvGroupRef(const float* x, int n, int8_t* q, float* step) {
  bool finite = true;
  for (int i = 0; i < n; ++i) finite = finite && std::isfinite(x[i]);
  if (!finite) {
    std::fill(q, q + n, int8_t{0});
    *step = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  float a = 0.0f;
  ComputeAbsMaxRef(x, 1, static_cast<uint64_t>(n), &a);
  *step = ActivationScale(a);
  const float inv = ActivationInvScale(a);
  for (int i = 0; i < n; ++i) q[i] = QuantizeActivationValue(x[i], inv);
}

float KvValueRef(const PagedKv& kv, bool is_k, uint64_t off) {
  if (!kv.int8()) return HalfToFloat((is_k ? kv.k : kv.v)[off]);
  const int8_t code = (is_k ? kv.k8 : kv.v8)[off];
  const float step = (is_k ? kv.k_steps : kv.v_steps)[off / KvInt8Group(kv.head_dim)];
  return HalfToFloat(FloatToHalf(static_cast<float>(code) * step));
}

void WriteKvRef(const PagedKv& kv, const int32_t* block_table, int pos0, int n_tokens, const float* k, const float* v) {
  const int row = kv.n_kv_heads * kv.head_dim;
  const int group = KvInt8Group(kv.head_dim);
  for (int t = 0; t < n_tokens; ++t) {
    for (int g = 0; g < kv.n_kv_heads; ++g) {
      const uint64_t off = PagedKvOffset(kv, block_table, pos0 + t, g);
      const int64_t src = int64_t{t} * row + g * kv.head_dim;
      if (kv.int8()) {
        for (int d = 0; d < kv.head_dim; d += group) {
          QuantizeKvGroupRef(k + src + d, group, kv.k8 + off + d, kv.k_steps + (off + d) / group);
          QuantizeKvGroupRef(v + src + d, group, kv.v8 + off + d, kv.v_steps + (off + d) / group);
        }
        continue;
      }
      for (int d = 0; d < kv.head_dim; ++d) {
        kv.k[off + d] = FloatToHalf(k[src + d]);
        kv.v[off + d] = FloatToHalf(v[src + d]);
      }
    }
  }
}

void AttentionPagedRef(const float* q, int n_tokens, int n_heads, const PagedKv& kv, const int32_t* block_table,
                       int pos0, float scale, float* out) {
  const int hd = kv.head_dim;
  const int group = n_heads / kv.n_kv_heads;
  std::vector<double> p(static_cast<size_t>(pos0) + n_tokens);
  std::vector<double> acc(hd);
  for (int t = 0; t < n_tokens; ++t) {
    const int n_ctx = pos0 + t + 1;  // causal: keys 0..pos
    for (int h = 0; h < n_heads; ++h) {
      const float* qh = q + (int64_t{t} * n_heads + h) * hd;
      const int g = h / group;
      double m = -INFINITY;
      for (int j = 0; j < n_ctx; ++j) {
        const uint64_t kj = PagedKvOffset(kv, block_table, j, g);
        double s = 0.0;
        for (int d = 0; d < hd; ++d) s += static_cast<double>(qh[d]) * KvValueRef(kv, true, kj + d);
        p[j] = s * scale;
        m = std::max(m, p[j]);
      }
      double sum = 0.0;
      for (int j = 0; j < n_ctx; ++j) sum += (p[j] = std::exp(p[j] - m));
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int j = 0; j < n_ctx; ++j) {
        const uint64_t vj = PagedKvOffset(kv, block_table, j, g);
        for (int d = 0; d < hd; ++d) acc[d] += p[j] * KvValueRef(kv, false, vj + d);
      }
      float* oh = out + (int64_t{t} * n_heads + h) * hd;
      for (int d = 0; d < hd; ++d) oh[d] = static_cast<float>(acc[d] / sum);
    }
  }
}

}  // namespace bitfleet::kernels::ref

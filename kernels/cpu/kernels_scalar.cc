// Portable variant: plain C++ over the runtime layouts (kernels/cpu/packed_weight.h). It runs
// on any CPU and documents in the simplest terms what the SIMD variants compute.
#include <algorithm>
#include <cmath>

#include "core/fp16.h"
#include "kernels/cpu/variant_fns.h"
#include "kernels/ref/matmul_ref.h"
#include "kernels/ref/ops_ref.h"

namespace bitfleet::kernels::cpu::scalar {
namespace {

float ActScale(const ActView& x, int t) { return x.absmax[t] / 127.0f; }

// Integer dot of 32 codes (one 32-element block, codes given by `code(i)`) with activations.
template <typename CodeFn>
int32_t Dot32(const int8_t* a, CodeFn code) {
  int32_t dot = 0;
  for (int i = 0; i < 32; ++i) dot += code(i) * a[i];
  return dot;
}

}  // namespace

float AbsMax(const float* x, uint64_t n) {
  float m = 0.0f;
  for (uint64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

void QuantizeRow(const float* x, uint64_t n, float inv_scale, int8_t* q, int32_t* sums) {
  for (uint64_t b = 0; b * 32 < n; ++b) {
    int32_t s = 0;
    for (uint64_t i = b * 32; i < std::min(n, b * 32 + 32); ++i) {
      q[i] = ref::QuantizeActivationValue(x[i], inv_scale);
      s += q[i];
    }
    sums[b] = s;
  }
}

void MatMulTernary(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  const uint64_t n256 = x.stride / 256;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes;
    const float* d = w.scales + r * w.blocks;
    for (int t = 0; t < x.n_tokens; ++t) {
      const int8_t* a = x.q + t * x.stride;
      float acc = 0.0f;
      for (uint64_t b = 0; b < w.blocks; ++b) {
        const uint8_t* c = row + b * 64;
        const int8_t* ab = a + b * 256;
        int32_t dot = 0;
        for (int k = 0; k < 64; ++k) {
          dot += (c[k] & 3) * ab[k] + ((c[k] >> 2) & 3) * ab[k + 64] + ((c[k] >> 4) & 3) * ab[k + 128] +
                 (c[k] >> 6) * ab[k + 192];
        }
        // Codes are w + 1: subtract the block's activation sum once.
        dot -= static_cast<int32_t>(x.sums256[t * n256 + b]);
        acc += d[b] * static_cast<float>(dot);
      }
      out[t * w.rows + r] = acc * ActScale(x, t);
    }
  }
}

namespace {

// Q4_0 (zero point 8, no min) and Q4_1 (zero point 0, min m): each block's integer sums in
// weight units, times the block's activation step.
void MatMulQ4(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out, int zero_point) {
  const uint64_t n32 = x.stride / 32;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes;
    for (int t = 0; t < x.n_tokens; ++t) {
      const int8_t* a = x.q + t * x.stride;
      const int32_t* sums = x.sums + t * n32;
      const float* steps = x.block_steps + t * n32;
      float acc = 0.0f;
      for (uint64_t b = 0; b < w.blocks; ++b) {
        // Block b is quarter b % 4 of group b / 4: quarters 0, 1 are low nibbles of bytes 0..31,
        // 32..63; quarters 2, 3 the high nibbles of the same bytes.
        const uint8_t* g = row + (b / 4) * 64 + (b % 2) * 32;
        const int shift = (b % 4) >= 2 ? 4 : 0;
        const int32_t dot = Dot32(a + b * 32, [&](int i) { return (g[i] >> shift) & 15; });
        const float d = HalfToFloat(w.half_d[r * w.blocks + b]);
        const float m = w.half_m != nullptr ? HalfToFloat(w.half_m[r * w.blocks + b]) : 0.0f;
        acc += steps[b] * (d * static_cast<float>(dot - zero_point * sums[b]) + m * static_cast<float>(sums[b]));
      }
      out[t * w.rows + r] = acc;
    }
  }
}

}  // namespace

void MatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  MatMulQ4(w, r0, r1, x, out, 8);
}

void MatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  MatMulQ4(w, r0, r1, x, out, 0);
}

void MatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* row = reinterpret_cast<const int8_t*>(w.data + r * w.row_bytes);
    for (int t = 0; t < x.n_tokens; ++t) {
      const int8_t* a = x.q + t * x.stride;
      const float* steps = x.block_steps + t * (x.stride / 32);
      float acc = 0.0f;
      for (uint64_t b = 0; b < w.blocks; ++b) {
        const int8_t* c = row + b * 32;
        const int32_t dot = Dot32(a + b * 32, [&](int i) { return int32_t{c[i]}; });
        acc += steps[b] * (HalfToFloat(w.half_d[r * w.blocks + b]) * static_cast<float>(dot));
      }
      out[t * w.rows + r] = acc;
    }
  }
}

namespace {

template <typename LoadFn>
void MatMulFloat(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n_tokens, float* out, LoadFn load) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.cols;
      float acc = 0.0f;
      for (uint64_t c = 0; c < w.cols; ++c) acc += load(r * w.cols + c) * xt[c];
      out[t * w.rows + r] = acc;
    }
  }
}

}  // namespace

void MatMulF32(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out) {
  const float* v = reinterpret_cast<const float*>(w.data);
  MatMulFloat(w, r0, r1, x, n, out, [v](uint64_t i) { return v[i]; });
}

void MatMulF16(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out) {
  const uint16_t* v = reinterpret_cast<const uint16_t*>(w.data);
  MatMulFloat(w, r0, r1, x, n, out, [v](uint64_t i) { return HalfToFloat(v[i]); });
}

void MatMulBf16(const WeightView& w, int64_t r0, int64_t r1, const float* x, int n, float* out) {
  const uint16_t* v = reinterpret_cast<const uint16_t*>(w.data);
  MatMulFloat(w, r0, r1, x, n, out, [v](uint64_t i) { return Bf16ToFloat(v[i]); });
}

// Sums in double: one scalar accumulator would lose ~n ulps over a long row.
float SumSquares(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(s);
}

void ScaleMul(const float* x, const float* w, float s, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * s) * w[i];
}

void QkF16(const float* q, int nq, int hd, const uint16_t* k, int64_t k_stride, int n_keys, float scale, float* s) {
  for (int j = 0; j < n_keys; ++j) {
    const uint16_t* kj = k + j * k_stride;
    for (int i = 0; i < nq; ++i) {
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot += q[i * hd + d] * HalfToFloat(kj[d]);
      s[i * n_keys + j] = scale * dot;
    }
  }
}

void PvF16(const float* p, int nq, int n_keys, const uint16_t* v, int64_t v_stride, int hd, float* acc) {
  for (int j = 0; j < n_keys; ++j) {
    const uint16_t* vj = v + j * v_stride;
    for (int i = 0; i < nq; ++i) {
      const float pj = p[i * n_keys + j];
      for (int d = 0; d < hd; ++d) acc[i * hd + d] += pj * HalfToFloat(vj[d]);
    }
  }
}

void F32ToF16(const float* x, int64_t n, uint16_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = FloatToHalf(x[i]);
}

void DequantI8F16(const int8_t* q, const float* steps, int64_t n, int group, uint16_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = FloatToHalf(static_cast<float>(q[i]) * steps[i / group]);
}

float ExpShiftSum(float* x, int64_t n, float max) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - max));
  return static_cast<float>(sum);
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void Relu2Mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float r = gate[i] > 0.0f ? gate[i] : 0.0f;
    out[i] = (r * r) * up[i];
  }
}

int64_t ArgMax(const float* x, int64_t n) { return ref::ArgMaxRef(x, n); }

}  // namespace bitfleet::kernels::cpu::scalar

#include "kernels/ref/matmul_ref.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/fp16.h"
#include "kernels/ref/quant.h"

namespace bitfleet::kernels::ref {
namespace {

float LoadHalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
  return HalfToFloat(h);
}

// TQ1_0 trit n (0 = most significant) of a base-3 byte: the byte is q * 256 / 243 rounded up,
// so multiplying by 3^n (mod 256) brings trit n to the top, where (b * 3) >> 8 reads it.
int Tq1Trit(uint8_t byte, int n) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const uint8_t shifted = static_cast<uint8_t>(byte * kPow3[n]);
  return (shifted * 3) >> 8;
}

void DecodeTq1(const uint8_t* b, IntBlock* out) {
  // qs[0..31]: elements m + 32n; qs[32..47]: 160 + m + 16n; qh[0..3]: 240 + m + 4n (4 trits).
  for (int m = 0; m < 32; ++m) {
    for (int n = 0; n < 5; ++n) out->w[m + 32 * n] = static_cast<int8_t>(Tq1Trit(b[m], n) - 1);
  }
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 5; ++n) out->w[160 + m + 16 * n] = static_cast<int8_t>(Tq1Trit(b[32 + m], n) - 1);
  }
  for (int m = 0; m < 4; ++m) {
    for (int n = 0; n < 4; ++n) out->w[240 + m + 4 * n] = static_cast<int8_t>(Tq1Trit(b[48 + m], n) - 1);
  }
  out->d = LoadHalfAt(b + 52);
  out->m = 0.0f;
}

void DecodeTq2(const uint8_t* b, IntBlock* out) {
  // Element e: byte (e / 128) * 32 + e % 32, bits 2 * ((e % 128) / 32).
  for (int e = 0; e < 256; ++e) {
    const int code = (b[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    out->w[e] = static_cast<int8_t>(code - 1);
  }
  out->d = LoadHalfAt(b + 64);
  out->m = 0.0f;
}

void DecodeI2s(const uint8_t* b, float scale, IntBlock* out) {
  // Byte j holds elements j, j+32, j+64, j+96 at shifts 6, 4, 2, 0; code 3 decodes as 0.
  static constexpr int8_t kValue[4] = {-1, 0, 1, 0};
  for (int j = 0; j < 32; ++j) {
    for (int g = 0; g < 4; ++g) out->w[g * 32 + j] = kValue[(b[j] >> (6 - 2 * g)) & 3];
  }
  out->d = scale;
  out->m = 0.0f;
}

void DecodeQ4(const uint8_t* qs, int offset, IntBlock* out) {
  // qs[j] low nibble = element j, high nibble = element j + 16.
  for (int j = 0; j < 16; ++j) {
    out->w[j] = static_cast<int8_t>((qs[j] & 15) - offset);
    out->w[j + 16] = static_cast<int8_t>((qs[j] >> 4) - offset);
  }
}

}  // namespace

int8_t QuantizeActivationValue(float x, float inv_scale) {
  const float v = x * inv_scale;
  if (std::isnan(v)) return 0;
  const float clamped = std::min(127.0f, std::max(-127.0f, v));
  return static_cast<int8_t>(std::nearbyint(clamped));
}

void ComputeAbsMaxRef(const float* x, int n_tokens, uint64_t cols, float* absmax) {
  for (int t = 0; t < n_tokens; ++t) {
    float m = 0.0f;
    for (uint64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(x[t * cols + c]));
    absmax[t] = m;
  }
}

void QuantizeActivationsRef(const float* x, int n_tokens, uint64_t cols, const float* absmax, int8_t* q) {
  for (int t = 0; t < n_tokens; ++t) {
    const float inv = ActivationInvScale(absmax[t]);
    for (uint64_t c = 0; c < cols; ++c) q[t * cols + c] = QuantizeActivationValue(x[t * cols + c], inv);
  }
}

void QuantizeActivationBlocksRef(const float* x, int n_tokens, uint64_t cols, int8_t* q, float* steps) {
  const uint64_t n_blocks = ActBlocks(cols);
  for (int t = 0; t < n_tokens; ++t) {
    for (uint64_t b = 0; b < n_blocks; ++b) {
      const uint64_t c0 = b * 32;
      const uint64_t c1 = std::min(cols, c0 + 32);
      float a = 0.0f;
      ComputeAbsMaxRef(x + t * cols + c0, 1, c1 - c0, &a);
      steps[t * n_blocks + b] = ActivationScale(a);
      const float inv = ActivationInvScale(a);
      for (uint64_t c = c0; c < c1; ++c) q[t * cols + c] = QuantizeActivationValue(x[t * cols + c], inv);
    }
  }
}

uint32_t IntBlockElems(DType type) {
  switch (type) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
      return 32;
    case DType::kI2_S:
      return 128;
    case DType::kTQ1_0:
    case DType::kTQ2_0:
      return 256;
    default:
      return 0;
  }
}

void DecodeIntBlock(DType type, const uint8_t* tensor, uint64_t block_index, float i2s_scale, IntBlock* out) {
  const uint8_t* b = tensor + block_index * Info(type).block_bytes;
  switch (type) {
    case DType::kTQ1_0:
      DecodeTq1(b, out);
      return;
    case DType::kTQ2_0:
      DecodeTq2(b, out);
      return;
    case DType::kI2_S:
      DecodeI2s(b, i2s_scale, out);
      return;
    case DType::kQ8_0:
      for (int j = 0; j < 32; ++j) out->w[j] = static_cast<int8_t>(b[2 + j]);
      out->d = LoadHalfAt(b);
      out->m = 0.0f;
      return;
    case DType::kQ4_0:
      DecodeQ4(b + 2, 8, out);
      out->d = LoadHalfAt(b);
      out->m = 0.0f;
      return;
    case DType::kQ4_1:
      DecodeQ4(b + 4, 0, out);
      out->d = LoadHalfAt(b);
      out->m = LoadHalfAt(b + 2);
      return;
    default:
      std::memset(out->w, 0, sizeof(out->w));
      out->d = out->m = 0.0f;
      return;
  }
}

namespace {

// out = W xd in double (and the magnitudes), W the GGUF tensor `bytes`.
Status MatMulDoubleRef(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes,
                       const std::vector<double>& xd, int n_tokens, std::span<double> out, std::span<double> abs_dot,
                       std::span<double> abs_w) {
  const uint64_t n_out = static_cast<uint64_t>(n_tokens) * rows;
  if (out.size() != n_out || (!abs_dot.empty() && abs_dot.size() != n_out) ||
      (!abs_w.empty() && abs_w.size() != rows)) {
    return absl::InvalidArgumentError("MatMulDequantRef: output size mismatch");
  }
  std::vector<float> w(rows * cols);
  BF_RETURN_IF_ERROR(DequantizeTensor(type, bytes, cols, w));
  for (uint64_t r = 0; r < rows; ++r) {
    const float* wr = &w[r * cols];
    if (!abs_w.empty()) {
      double a = 0.0;
      for (uint64_t c = 0; c < cols; ++c) a += std::fabs(static_cast<double>(wr[c]));
      abs_w[r] = a;
    }
    for (int t = 0; t < n_tokens; ++t) {
      const double* xt = &xd[t * cols];
      double acc = 0.0;
      double mag = 0.0;
      for (uint64_t c = 0; c < cols; ++c) {
        const double p = static_cast<double>(wr[c]) * xt[c];
        acc += p;
        mag += std::fabs(p);
      }
      out[t * rows + r] = acc;
      if (!abs_dot.empty()) abs_dot[t * rows + r] = mag;
    }
  }
  return absl::OkStatus();
}

}  // namespace

Status MatMulDequantRef(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes, const float* x,
                        int n_tokens, const float* absmax, std::span<double> out, std::span<double> abs_dot,
                        std::span<double> abs_w) {
  std::vector<double> xd(static_cast<uint64_t>(n_tokens) * cols);
  if (absmax == nullptr) {
    for (uint64_t i = 0; i < xd.size(); ++i) xd[i] = x[i];
  } else {
    std::vector<int8_t> q(xd.size());
    QuantizeActivationsRef(x, n_tokens, cols, absmax, q.data());
    for (int t = 0; t < n_tokens; ++t) {
      const double s = ActivationScale(absmax[t]);
      for (uint64_t c = 0; c < cols; ++c) xd[t * cols + c] = q[t * cols + c] * s;
    }
  }
  return MatMulDoubleRef(type, cols, rows, bytes, xd, n_tokens, out, abs_dot, abs_w);
}

Status MatMulDequantBlocksRef(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes,
                              const float* x, int n_tokens, std::span<double> out, std::span<double> abs_dot,
                              std::span<double> abs_w) {
  const uint64_t n_blocks = ActBlocks(cols);
  std::vector<double> xd(static_cast<uint64_t>(n_tokens) * cols);
  std::vector<int8_t> q(xd.size());
  std::vector<float> steps(static_cast<uint64_t>(n_tokens) * n_blocks);
  QuantizeActivationBlocksRef(x, n_tokens, cols, q.data(), steps.data());
  for (int t = 0; t < n_tokens; ++t) {
    for (uint64_t c = 0; c < cols; ++c) {
      xd[t * cols + c] = q[t * cols + c] * static_cast<double>(steps[t * n_blocks + c / 32]);
    }
  }
  return MatMulDoubleRef(type, cols, rows, bytes, xd, n_tokens, out, abs_dot, abs_w);
}

namespace {

// The integer path; `step(t, b)` is the activation step of block b of token t, or null for
// per-token scaling (absmax / 127 applied to the row's sum, as the kernels did before blocks).
Status MatMulInt8Core(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes, const int8_t* q,
                      const float* absmax, const float* steps, int n_tokens, std::span<double> out) {
  const uint32_t be = IntBlockElems(type);
  if (be == 0) return absl::InvalidArgumentError("MatMulInt8Ref: not a quantized type");
  if (steps != nullptr && be != 32) return absl::InvalidArgumentError("MatMulInt8BlocksRef: not a 32-block type");
  BF_ASSIGN_OR_RETURN(uint64_t expected, TensorBytes(type, cols, rows * cols));
  if (bytes.size() != expected || out.size() != static_cast<uint64_t>(n_tokens) * rows) {
    return absl::InvalidArgumentError("MatMulInt8Ref: size mismatch");
  }
  float i2s_scale = 0.0f;
  if (type == DType::kI2_S) {
    BF_ASSIGN_OR_RETURN(i2s_scale, ReadI2sScale(bytes));
  }
  const uint64_t blocks_per_row = cols / be;
  IntBlock block;
  for (uint64_t r = 0; r < rows; ++r) {
    for (int t = 0; t < n_tokens; ++t) out[t * rows + r] = 0.0;
    for (uint64_t b = 0; b < blocks_per_row; ++b) {
      DecodeIntBlock(type, bytes.data(), r * blocks_per_row + b, i2s_scale, &block);
      for (int t = 0; t < n_tokens; ++t) {
        const int8_t* qt = q + t * cols + b * be;
        int64_t dot = 0;
        int64_t sum = 0;
        for (uint32_t i = 0; i < be; ++i) {
          dot += static_cast<int64_t>(block.w[i]) * qt[i];
          sum += qt[i];
        }
        const double step = steps != nullptr ? steps[t * blocks_per_row + b] : 1.0;
        out[t * rows + r] += step * (static_cast<double>(block.d) * static_cast<double>(dot) +
                                     static_cast<double>(block.m) * static_cast<double>(sum));
      }
    }
    if (steps == nullptr) {
      for (int t = 0; t < n_tokens; ++t) out[t * rows + r] *= ActivationScale(absmax[t]);
    }
  }
  return absl::OkStatus();
}

}  // namespace

Status MatMulInt8Ref(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes, const int8_t* q,
                     const float* absmax, int n_tokens, std::span<double> out) {
  return MatMulInt8Core(type, cols, rows, bytes, q, absmax, nullptr, n_tokens, out);
}

Status MatMulInt8BlocksRef(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes,
                           const int8_t* q, const float* steps, int n_tokens, std::span<double> out) {
  return MatMulInt8Core(type, cols, rows, bytes, q, nullptr, steps, n_tokens, out);
}

}  // namespace bitfleet::kernels::ref

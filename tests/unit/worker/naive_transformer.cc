#include "tests/unit/worker/naive_transformer.h"

#include <algorithm>
#include <cmath>

#include "core/fp16.h"
#include "kernels/ref/quant.h"

namespace bitfleet::worker::testing {

StatusOr<std::vector<float>> NaiveTransformer::LoadFloats(const gguf::GgufFile& file, const std::string& name) {
  const gguf::TensorInfo* info = file.FindTensor(name);
  if (info == nullptr) return absl::NotFoundError(name);
  std::vector<float> out(info->elements());
  BF_RETURN_IF_ERROR(kernels::ref::DequantizeTensor(info->type, file.TensorData(*info), info->shape[0], out));
  return out;
}

StatusOr<NaiveTransformer::Matrix> NaiveTransformer::LoadMatrix(const gguf::GgufFile& file, const std::string& name,
                                                                 const Options& options) {
  Matrix m;
  const DType type = file.FindTensor(name)->type;
  if (options.emulate_int8_activations && IsQuantized(type)) {
    // The engine's contract (kernels/matmul.h): per 32-block for Q4_0/Q4_1/Q8_0, per token for
    // the ternary types.
    const bool per_block = type == DType::kQ4_0 || type == DType::kQ4_1 || type == DType::kQ8_0;
    m.int8_span = per_block ? 32 : static_cast<int>(file.FindTensor(name)->shape[0]);
  }
  BF_ASSIGN_OR_RETURN(m.w, LoadFloats(file, name));
  const gguf::TensorInfo* info = file.FindTensor(name);
  m.cols = static_cast<int>(info->shape[0]);
  m.rows = static_cast<int>(info->shape[1]);
  const std::string scale_name = name.substr(0, name.size() - 7) + ".scale";  // strip ".weight"
  if (file.FindTensor(scale_name) != nullptr) {
    BF_ASSIGN_OR_RETURN(std::vector<float> s, LoadFloats(file, scale_name));
    m.scale = s[0];
  }
  return m;
}

void NaiveTransformer::Matrix::Apply(const std::vector<double>& x_in, std::vector<double>& out) const {
  std::vector<double> x = x_in;
  for (size_t c0 = 0; int8_span > 0 && c0 < x.size(); c0 += int8_span) {
    // In float, as the kernels' contract states it (kernels/ref/matmul_ref.h).
    const size_t c1 = std::min(x.size(), c0 + int8_span);
    float absmax = 0;
    for (size_t c = c0; c < c1; ++c) absmax = std::max(absmax, std::fabs(static_cast<float>(x[c])));
    const float inv_scale = absmax > 0 ? 127.0f / absmax : 0.0f;
    const float scale = absmax / 127.0f;
    for (size_t c = c0; c < c1; ++c) {
      const float q = std::clamp(std::nearbyint(static_cast<float>(x[c]) * inv_scale), -127.0f, 127.0f);
      x[c] = static_cast<double>(q) * scale;
    }
  }
  out.assign(rows, 0.0);
  for (int r = 0; r < rows; ++r) {
    double sum = 0;
    for (int c = 0; c < cols; ++c) sum += static_cast<double>(w[static_cast<size_t>(r) * cols + c]) * x[c];
    out[r] = sum * scale;
  }
}

StatusOr<NaiveTransformer> NaiveTransformer::Load(const gguf::GgufFile& file, const Options& options) {
  NaiveTransformer m;
  BF_ASSIGN_OR_RETURN(m.config_, model::ReadModelConfig(file));
  BF_ASSIGN_OR_RETURN(m.embedding_, LoadFloats(file, "token_embd.weight"));
  BF_ASSIGN_OR_RETURN(m.output_norm_, LoadFloats(file, "output_norm.weight"));
  const bool tied = file.FindTensor("output.weight") == nullptr;
  BF_ASSIGN_OR_RETURN(m.output_, LoadMatrix(file, tied ? "token_embd.weight" : "output.weight", options));
  const bool sub_norms = file.FindTensor("blk.0.attn_sub_norm.weight") != nullptr;
  for (uint32_t i = 0; i < m.config_.n_layer; ++i) {
    auto name = [i](const char* suffix) { return "blk." + std::to_string(i) + "." + suffix; };
    Layer l;
    BF_ASSIGN_OR_RETURN(l.attn_norm, LoadFloats(file, name("attn_norm.weight")));
    BF_ASSIGN_OR_RETURN(l.ffn_norm, LoadFloats(file, name("ffn_norm.weight")));
    if (sub_norms) {
      BF_ASSIGN_OR_RETURN(l.attn_sub_norm, LoadFloats(file, name("attn_sub_norm.weight")));
      BF_ASSIGN_OR_RETURN(l.ffn_sub_norm, LoadFloats(file, name("ffn_sub_norm.weight")));
    }
    if (file.FindTensor(name("attn_q.bias")) != nullptr) {
      BF_ASSIGN_OR_RETURN(l.q_bias, LoadFloats(file, name("attn_q.bias")));
      BF_ASSIGN_OR_RETURN(l.k_bias, LoadFloats(file, name("attn_k.bias")));
      BF_ASSIGN_OR_RETURN(l.v_bias, LoadFloats(file, name("attn_v.bias")));
    }
    BF_ASSIGN_OR_RETURN(l.wq, LoadMatrix(file, name("attn_q.weight"), options));
    BF_ASSIGN_OR_RETURN(l.wk, LoadMatrix(file, name("attn_k.weight"), options));
    BF_ASSIGN_OR_RETURN(l.wv, LoadMatrix(file, name("attn_v.weight"), options));
    BF_ASSIGN_OR_RETURN(l.wo, LoadMatrix(file, name("attn_output.weight"), options));
    BF_ASSIGN_OR_RETURN(l.gate, LoadMatrix(file, name("ffn_gate.weight"), options));
    BF_ASSIGN_OR_RETURN(l.up, LoadMatrix(file, name("ffn_up.weight"), options));
    BF_ASSIGN_OR_RETURN(l.down, LoadMatrix(file, name("ffn_down.weight"), options));
    m.layers_.push_back(std::move(l));
  }
  return m;
}

void NaiveTransformer::RmsNorm(const std::vector<double>& x, const std::vector<float>& w,
                               std::vector<double>& y) const {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + config_.rms_eps);
  y.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
}

void NaiveTransformer::Rope(std::vector<double>& v, int n_heads, int pos) const {
  const int hd = config_.head_dim;
  const int rot = config_.rope_dim ? config_.rope_dim : hd;
  const bool neox = config_.rope_type == model::RopeType::kNeox;
  for (int h = 0; h < n_heads; ++h) {
    double* x = v.data() + static_cast<size_t>(h) * hd;
    for (int i = 0; i < rot / 2; ++i) {
      const double theta = pos * std::pow(static_cast<double>(config_.rope_freq_base), -2.0 * i / rot);
      const int a = neox ? i : 2 * i;
      const int b = neox ? i + rot / 2 : 2 * i + 1;
      const double x0 = x[a], x1 = x[b];
      x[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
      x[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
  }
}

std::vector<float> NaiveTransformer::Forward(const std::vector<int32_t>& tokens) const {
  const model::ModelConfig& c = config_;
  const int n = static_cast<int>(tokens.size());
  const int e = c.n_embd, hd = c.head_dim, nh = c.n_head, nkv = c.n_head_kv, ff = c.n_ff;
  auto f16 = [](double v) { return static_cast<double>(HalfToFloat(FloatToHalf(static_cast<float>(v)))); };

  std::vector<std::vector<double>> x(n, std::vector<double>(e));
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < e; ++i) x[t][i] = embedding_[static_cast<size_t>(tokens[t]) * e + i];
  }
  std::vector<double> xn, q, tmp, g, u, h;
  for (const Layer& l : layers_) {
    std::vector<std::vector<double>> qs(n), ks(n), vs(n);
    for (int t = 0; t < n; ++t) {
      RmsNorm(x[t], l.attn_norm, xn);
      l.wq.Apply(xn, qs[t]);
      l.wk.Apply(xn, ks[t]);
      l.wv.Apply(xn, vs[t]);
      for (size_t i = 0; i < l.q_bias.size(); ++i) qs[t][i] += l.q_bias[i];
      for (size_t i = 0; i < l.k_bias.size(); ++i) ks[t][i] += l.k_bias[i];
      for (size_t i = 0; i < l.v_bias.size(); ++i) vs[t][i] += l.v_bias[i];
      Rope(qs[t], nh, t);
      Rope(ks[t], nkv, t);
      for (double& v : ks[t]) v = f16(v);
      for (double& v : vs[t]) v = f16(v);
    }
    for (int t = 0; t < n; ++t) {
      std::vector<double> attn(static_cast<size_t>(nh) * hd, 0.0);
      for (int head = 0; head < nh; ++head) {
        const int kvh = head / (nh / nkv);
        std::vector<double> score(t + 1);
        double max_score = -INFINITY;
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += qs[t][head * hd + d] * ks[s][kvh * hd + d];
          score[s] = dot / std::sqrt(static_cast<double>(hd));
          max_score = std::max(max_score, score[s]);
        }
        double z = 0;
        for (double& sc : score) z += (sc = std::exp(sc - max_score));
        for (int s = 0; s <= t; ++s) {
          for (int d = 0; d < hd; ++d) attn[head * hd + d] += score[s] / z * vs[s][kvh * hd + d];
        }
      }
      if (!l.attn_sub_norm.empty()) RmsNorm(std::vector<double>(attn), l.attn_sub_norm, attn);
      l.wo.Apply(attn, tmp);
      for (int i = 0; i < e; ++i) x[t][i] += tmp[i];

      RmsNorm(x[t], l.ffn_norm, xn);
      l.gate.Apply(xn, g);
      l.up.Apply(xn, u);
      h.resize(ff);
      for (int i = 0; i < ff; ++i) {
        const double a = c.activation == model::Activation::kRelu2 ? (g[i] > 0 ? g[i] * g[i] : 0.0)
                                                                    : g[i] / (1.0 + std::exp(-g[i]));
        h[i] = a * u[i];
      }
      if (!l.ffn_sub_norm.empty()) RmsNorm(std::vector<double>(h), l.ffn_sub_norm, h);
      l.down.Apply(h, tmp);
      for (int i = 0; i < e; ++i) x[t][i] += tmp[i];
    }
  }
  std::vector<float> logits(static_cast<size_t>(n) * c.n_vocab);
  for (int t = 0; t < n; ++t) {
    RmsNorm(x[t], output_norm_, xn);
    output_.Apply(xn, tmp);
    for (uint32_t v = 0; v < c.n_vocab; ++v) {
      logits[static_cast<size_t>(t) * c.n_vocab + v] = static_cast<float>(tmp[v]);
    }
  }
  return logits;
}

}  // namespace bitfleet::worker::testing

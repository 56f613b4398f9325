// A synthetic model must run: one token through a float reference of the forward pass (at
// position 0 attention returns V, so no RoPE or softmax is needed) gives finite, spread-out
// logits for every architecture, and different tokens give uncorrelated logits.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/arch/model_config.h"
#include "tests/unit/model/synth/synth_test_util.h"

namespace bitfleet::synth {
namespace {

using testing::Decode;

class Forward {
 public:
  Forward(const gguf::GgufFile& file, const model::ModelConfig& config) : file_(file), c_(config) {}

  std::vector<float> Logits(int token) {
    const uint64_t e = c_.n_embd;
    const std::vector<float> embd = Decode(file_, model::tensor_names::kTokenEmbd);
    std::vector<float> x(embd.begin() + token * e, embd.begin() + (token + 1) * e);
    for (uint32_t l = 0; l < c_.n_layer; ++l) {
      auto name = [l](const char* suffix) { return model::tensor_names::Layer(l, suffix); };
      // Attention of a lone token: every query head reads its KV head's value vector.
      std::vector<float> h = Norm(x, name("attn_norm.weight"));
      const std::vector<float> v = MatVec(name("attn_v.weight"), h);
      std::vector<float> attn(c_.q_dim());
      const uint32_t group = c_.n_head / c_.n_head_kv;
      for (uint32_t head = 0; head < c_.n_head; ++head) {
        std::copy_n(v.begin() + (head / group) * c_.head_dim, c_.head_dim, attn.begin() + head * c_.head_dim);
      }
      if (c_.has_sub_norms) attn = Norm(attn, name("attn_sub_norm.weight"));
      Add(x, MatVec(name("attn_output.weight"), attn));

      h = Norm(x, name("ffn_norm.weight"));
      const std::vector<float> gate = MatVec(name("ffn_gate.weight"), h);
      const std::vector<float> up = MatVec(name("ffn_up.weight"), h);
      std::vector<float> act(gate.size());
      for (size_t i = 0; i < act.size(); ++i) {
        const float g = gate[i];
        const float a = c_.activation == model::Activation::kSilu ? g / (1.0f + std::exp(-g))
                                                                  : std::max(g, 0.0f) * std::max(g, 0.0f);
        act[i] = a * up[i];
      }
      if (c_.has_sub_norms) act = Norm(act, name("ffn_sub_norm.weight"));
      Add(x, MatVec(name("ffn_down.weight"), act));
    }
    x = Norm(x, model::tensor_names::kOutputNorm);
    return MatVec(c_.tied_embeddings ? model::tensor_names::kTokenEmbd : model::tensor_names::kOutput, x);
  }

 private:
  std::vector<float> Norm(const std::vector<float>& x, const std::string& weight) {
    const std::vector<float> w = Decode(file_, weight);
    double sum_sq = 0;
    for (float v : x) sum_sq += double{v} * v;
    const float inv = 1.0f / std::sqrt(static_cast<float>(sum_sq / x.size()) + c_.rms_eps);
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * w[i];
    return out;
  }

  // out[r] = sum_i W[r][i] x[i], with W stored as rows of x.size() (ggml order).
  std::vector<float> MatVec(const std::string& weight, const std::vector<float>& x) {
    const std::vector<float> w = Decode(file_, weight);
    std::vector<float> out(w.size() / x.size());
    for (size_t r = 0; r < out.size(); ++r) {
      double acc = 0;
      for (size_t i = 0; i < x.size(); ++i) acc += double{w[r * x.size() + i]} * x[i];
      out[r] = static_cast<float>(acc);
    }
    return out;
  }

  static void Add(std::vector<float>& x, const std::vector<float>& y) {
    for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
  }

  const gguf::GgufFile& file_;
  const model::ModelConfig& c_;
};

double Correlation(const std::vector<float>& a, const std::vector<float>& b) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ma += a[i];
    mb += b[i];
  }
  ma /= a.size();
  mb /= b.size();
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += (a[i] - ma) * (b[i] - mb);
    aa += (a[i] - ma) * (a[i] - ma);
    bb += (b[i] - mb) * (b[i] - mb);
  }
  return ab / std::sqrt(aa * bb);
}

TEST(SynthForwardTest, LogitsAreFiniteAndSpread) {
  for (const char* arch : {"llama", "bitnet", "bitnet-b1.58"}) {
    for (DType type : {DType::kF32, DType::kTQ2_0, DType::kQ4_0}) {
      SCOPED_TRACE(std::string(arch) + " " + DTypeName(type));
      auto model = testing::SynthToBuffer(testing::TinyOptions(arch, type));
      ASSERT_TRUE(model.ok()) << model.status();
      auto config = model::ReadModelConfig(*model->file);
      ASSERT_TRUE(config.ok());
      Forward forward(*model->file, *config);
      std::vector<std::vector<float>> all;
      for (int token : {1, 300, 1000}) {
        const std::vector<float> logits = forward.Logits(token);
        ASSERT_EQ(logits.size(), config->n_vocab);
        double sum = 0, sum_sq = 0;
        for (float v : logits) {
          ASSERT_TRUE(std::isfinite(v));
          sum += v;
          sum_sq += double{v} * v;
        }
        const double mean = sum / logits.size();
        const double stddev = std::sqrt(sum_sq / logits.size() - mean * mean);
        // Embedding / LM head std 2/sqrt(n_embd) after a unit-RMS norm: logits of std ~2.
        EXPECT_GT(stddev, 1.5) << "token " << token;
        EXPECT_LT(stddev, 2.6) << "token " << token;
        all.push_back(logits);
      }
      // Different tokens lead to different predictions.
      EXPECT_LT(std::fabs(Correlation(all[0], all[1])), 0.9);
      EXPECT_LT(std::fabs(Correlation(all[1], all[2])), 0.9);
    }
  }
}

}  // namespace
}  // namespace bitfleet::synth

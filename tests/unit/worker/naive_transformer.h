// An independent, deliberately plain float reference of the llama / BitNet / Qwen2 forward pass for
// tests: every weight dequantized to float up front, full causal attention recomputed from
// scratch for the whole token list (no cache, no batching), sums in double. The engine
// properties it can model on purpose: the f16 KV cache (K and V are rounded to f16 as stored,
// always) and, when asked, the int8 quantization of the activations that feed block-quantized
// weights (W8A8/W4A8/W2A8): q = round(x * 127 / absmax), x' = q * absmax / 127, over each
// 32-block (Q4_0, Q4_1, Q8_0) or the whole token (ternary).
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"

namespace bitfleet::worker::testing {

class NaiveTransformer {
 public:
  struct Options {
    bool emulate_int8_activations = false;
  };
  static StatusOr<NaiveTransformer> Load(const gguf::GgufFile& file, const Options& options);

  // Logits (tokens.size() × n_vocab) of a teacher-forced pass from position 0.
  std::vector<float> Forward(const std::vector<int32_t>& tokens) const;

  const model::ModelConfig& config() const { return config_; }

 private:
  struct Matrix {
    std::vector<float> w;  // rows × cols, row-major
    int rows = 0;
    int cols = 0;
    float scale = 1.0f;
    int int8_span = 0;  // > 0: quantize x to int8 first over spans of this many columns
    // out[r] = scale * sum_c w[r][c] * x[c]
    void Apply(const std::vector<double>& x, std::vector<double>& out) const;
  };
  struct Layer {
    std::vector<float> attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm;
    std::vector<float> q_bias, k_bias, v_bias;  // empty unless the file has them (Qwen2)
    Matrix wq, wk, wv, wo, gate, up, down;
  };
  static StatusOr<Matrix> LoadMatrix(const gguf::GgufFile& file, const std::string& name, const Options& options);
  static StatusOr<std::vector<float>> LoadFloats(const gguf::GgufFile& file, const std::string& name);
  void RmsNorm(const std::vector<double>& x, const std::vector<float>& w, std::vector<double>& y) const;
  void Rope(std::vector<double>& v, int n_heads, int pos) const;

  model::ModelConfig config_;
  std::vector<float> embedding_;  // n_vocab × n_embd
  Matrix output_;
  std::vector<float> output_norm_;
  std::vector<Layer> layers_;
};

}  // namespace bitfleet::worker::testing

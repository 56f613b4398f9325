// The llama decoder layer (pre-norm, GQA self-attention with RoPE, SiLU-gated FFN):
//   h = x + Wo · Attn(RoPE(Wq n), RoPE(Wk n), Wv n),   n = RmsNorm(x) * attn_norm
//   y = h + Wdown · (act(Wgate m) ⊙ Wup m),           m = RmsNorm(h) * ffn_norm
// The activation comes from the config (SiLU for llama). Optional per-projection scales are
// honoured like in BitNet files. Qwen2 is this layer with biases added to Wq n, Wk n and Wv n
// (before RoPE) and NEOX RoPE (ModelDims).
#include "worker/decoder_layers.h"
#include "worker/layer_ops.h"

namespace bitfleet::worker {
namespace {

class LlamaLayers final : public DecoderLayers {
 public:
  using DecoderLayers::DecoderLayers;

  Status Forward(int layer, StepContext& ctx) const override {
    const LayerWeights& w = layers_[layer];
    StepScratch& s = ctx.s;

    NormalizeInput(ctx, w.attn_norm);
    SelfAttention(ctx, w, layer);
    BF_RETURN_IF_ERROR(ProjectRow(ctx, w.wo, s.attn.data(), s.proj.data()));
    AddResidual(ctx);

    NormalizeInput(ctx, w.ffn_norm);
    GatedFeedForward(ctx, w);
    BF_RETURN_IF_ERROR(ProjectRow(ctx, w.w_down, s.hidden.data(), s.proj.data()));
    AddResidual(ctx);
    return absl::OkStatus();
  }
};

}  // namespace

StatusOr<std::unique_ptr<DecoderLayers>> LoadLlamaLayers(const gguf::GgufFile& file, const model::ModelConfig& config,
                                                         const sharding::RankShard& shard, const ModelDims& dims,
                                                         ThreadPool* pool) {
  std::vector<LayerWeights> layers;
  layers.reserve(config.n_layer);
  for (uint32_t i = 0; i < config.n_layer; ++i) {
    BF_ASSIGN_OR_RETURN(LayerWeights w, LoadCommonLayerWeights(file, shard, dims, i, pool));
    if (config.qkv_bias) {
      BF_ASSIGN_OR_RETURN(QkvBiases biases, LoadQkvBiases(file, shard, i));
      w.q_bias = std::move(biases.q);
      w.k_bias = std::move(biases.k);
      w.v_bias = std::move(biases.v);
    }
    layers.push_back(std::move(w));
  }
  return std::unique_ptr<DecoderLayers>(new LlamaLayers(std::move(layers)));
}

}  // namespace bitfleet::worker

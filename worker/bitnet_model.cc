// The BitNet b1.58 decoder layer: llama's layer with an RMSNorm right before each
// row-parallel projection (attn_sub_norm before attn_output, ffn_sub_norm before ffn_down)
// and, in most files, squared-ReLU gating and per-projection scales:
//   h = x + Wo · SubNorm_attn(Attn(...)),   y = h + Wdown · SubNorm_ffn(act(Wgate m) ⊙ Wup m)
// The sub-norms normalize the sharded dimension, so their sum of squares is all-reduced
// across tensor-parallel ranks (layer_ops.h SubNorm).
#include "model/arch/model_config.h"
#include "worker/decoder_layers.h"
#include "worker/layer_ops.h"

namespace bitfleet::worker {
namespace {

class BitnetLayers final : public DecoderLayers {
 public:
  using DecoderLayers::DecoderLayers;

  Status Forward(int layer, StepContext& ctx) const override {
    const LayerWeights& w = layers_[layer];
    const ModelDims& d = ctx.dims;
    StepScratch& s = ctx.s;

    NormalizeInput(ctx, w.attn_norm);
    SelfAttention(ctx, w, layer);
    // s.q is free once attention has run: it takes the normalized attention output.
    BF_RETURN_IF_ERROR(SubNorm(ctx, w.attn_sub_norm, s.attn.data(), s.q.data(), d.q_dim(), d.q_dim_full));
    BF_RETURN_IF_ERROR(ProjectRow(ctx, w.wo, s.q.data(), s.proj.data()));
    AddResidual(ctx);

    NormalizeInput(ctx, w.ffn_norm);
    GatedFeedForward(ctx, w);
    // s.gate is free once the gating has run.
    BF_RETURN_IF_ERROR(SubNorm(ctx, w.ffn_sub_norm, s.hidden.data(), s.gate.data(), d.n_ff, d.n_ff_full));
    BF_RETURN_IF_ERROR(ProjectRow(ctx, w.w_down, s.gate.data(), s.proj.data()));
    AddResidual(ctx);
    return absl::OkStatus();
  }
};

}  // namespace

StatusOr<std::unique_ptr<DecoderLayers>> LoadBitnetLayers(const gguf::GgufFile& file, const model::ModelConfig& config,
                                                          const sharding::RankShard& shard, const ModelDims& dims,
                                                          ThreadPool* pool) {
  using model::tensor_names::Layer;
  std::vector<LayerWeights> layers;
  layers.reserve(config.n_layer);
  for (uint32_t i = 0; i < config.n_layer; ++i) {
    BF_ASSIGN_OR_RETURN(LayerWeights w, LoadCommonLayerWeights(file, shard, dims, i, pool));
    BF_ASSIGN_OR_RETURN(w.attn_sub_norm, LoadShardVector(file, shard, Layer(i, "attn_sub_norm.weight"), dims.q_dim()));
    BF_ASSIGN_OR_RETURN(w.ffn_sub_norm, LoadShardVector(file, shard, Layer(i, "ffn_sub_norm.weight"), dims.n_ff));
    layers.push_back(std::move(w));
  }
  return std::unique_ptr<DecoderLayers>(new BitnetLayers(std::move(layers)));
}

}  // namespace bitfleet::worker

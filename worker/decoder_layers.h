// Internal to the worker: the decoder stack of one architecture. Each architecture has its own
// file (llama_model.cc, bitnet_model.cc) that loads its layer tensors and runs its layer; the
// shared pieces (projections, attention over the paged cache, norms) are in layer_ops.h.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"
#include "sharding/shard_plan.h"
#include "worker/model_weights.h"
#include "worker/step_context.h"

namespace bitfleet::worker {

// The tensors of one decoder layer. Sub-norms are empty for architectures without them.
struct LayerWeights {
  std::vector<float> attn_norm;
  std::vector<float> ffn_norm;
  std::vector<float> attn_sub_norm;  // BitNet: RMSNorm over the attention output (q_dim)
  std::vector<float> ffn_sub_norm;   // BitNet: RMSNorm over the FFN hidden state (n_ff)
  Projection wq, wk, wv, wo;
  Projection w_gate, w_up, w_down;
  // Qwen2: added to the Q, K and V projections' outputs (this rank's rows); empty without.
  std::vector<float> q_bias, k_bias, v_bias;

  uint64_t stream_bytes() const;
  uint64_t resident_bytes() const;
};

// Loads this rank's slices (`shard`, from the shard plan) of the tensors every llama-style layer
// has (norms and the seven projections). `dims` are the rank's shapes; a slice whose local shape
// differs from them is INVALID_ARGUMENT naming the tensor.
// `pool`, when given, repacks the matrices on its threads.
StatusOr<LayerWeights> LoadCommonLayerWeights(const gguf::GgufFile& file, const sharding::RankShard& shard,
                                              const ModelDims& dims, uint32_t layer, ThreadPool* pool = nullptr);

// Layer `layer`'s attn_q / attn_k / attn_v biases (Qwen2) as this rank holds them: of each, the
// elements of the rows it holds of the projection (the shard plan's rows of attn_q.weight, ...).
struct QkvBiases {
  std::vector<float> q, k, v;
};
StatusOr<QkvBiases> LoadQkvBiases(const gguf::GgufFile& file, const sharding::RankShard& shard, uint32_t layer);

// The rank's slice of matrix `name`, checked to be `cols` × `rows` locally (GGUF [cols, rows]).
StatusOr<Projection> LoadShardProjection(const gguf::GgufFile& file, const sharding::RankShard& shard,
                                         const std::string& name, uint64_t cols, uint64_t rows,
                                         ThreadPool* pool = nullptr);
// The rank's slice of vector `name`, checked to hold `n` elements locally.
StatusOr<std::vector<float>> LoadShardVector(const gguf::GgufFile& file, const sharding::RankShard& shard,
                                             const std::string& name, uint64_t n);

// The layers of one architecture; subclasses implement Forward.
class DecoderLayers {
 public:
  explicit DecoderLayers(std::vector<LayerWeights> layers) : layers_(std::move(layers)) {}
  virtual ~DecoderLayers() = default;
  // Runs layer `layer` over ctx.s.x (tokens × n_embd) in place.
  virtual Status Forward(int layer, StepContext& ctx) const = 0;

  int num_layers() const { return static_cast<int>(layers_.size()); }
  uint64_t stream_bytes() const;
  uint64_t resident_bytes() const;

 protected:
  std::vector<LayerWeights> layers_;
};

StatusOr<std::unique_ptr<DecoderLayers>> LoadLlamaLayers(const gguf::GgufFile& file, const model::ModelConfig& config,
                                                         const sharding::RankShard& shard, const ModelDims& dims,
                                                         ThreadPool* pool = nullptr);
StatusOr<std::unique_ptr<DecoderLayers>> LoadBitnetLayers(const gguf::GgufFile& file, const model::ModelConfig& config,
                                                          const sharding::RankShard& shard, const ModelDims& dims,
                                                          ThreadPool* pool = nullptr);

}  // namespace bitfleet::worker

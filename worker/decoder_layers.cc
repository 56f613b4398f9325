#include "worker/decoder_layers.h"

#include "absl/strings/str_cat.h"

namespace bitfleet::worker {
namespace {

uint64_t StreamBytes(const Projection& p) { return p.weight ? p.weight->stream_bytes() : 0; }
uint64_t ResidentBytes(const Projection& p) { return p.weight ? p.weight->bytes() : 0; }

}  // namespace

uint64_t LayerWeights::stream_bytes() const {
  return StreamBytes(wq) + StreamBytes(wk) + StreamBytes(wv) + StreamBytes(wo) + StreamBytes(w_gate) +
         StreamBytes(w_up) + StreamBytes(w_down);
}

uint64_t LayerWeights::resident_bytes() const {
  return ResidentBytes(wq) + ResidentBytes(wk) + ResidentBytes(wv) + ResidentBytes(wo) + ResidentBytes(w_gate) +
         ResidentBytes(w_up) + ResidentBytes(w_down);
}

uint64_t DecoderLayers::stream_bytes() const {
  uint64_t total = 0;
  for (const LayerWeights& w : layers_) total += w.stream_bytes();
  return total;
}

uint64_t DecoderLayers::resident_bytes() const {
  uint64_t total = 0;
  for (const LayerWeights& w : layers_) total += w.resident_bytes();
  return total;
}

StatusOr<QkvBiases> LoadQkvBiases(const gguf::GgufFile& file, const sharding::RankShard& shard, uint32_t layer) {
  namespace names = model::tensor_names;
  const std::pair<const char*, const char*> pairs[] = {
      {names::kAttnQ, names::kAttnQBias}, {names::kAttnK, names::kAttnKBias}, {names::kAttnV, names::kAttnVBias}};
  QkvBiases biases;
  std::vector<float>* out[] = {&biases.q, &biases.k, &biases.v};
  for (int i = 0; i < 3; ++i) {
    const std::string weight = names::Layer(layer, pairs[i].first);
    const sharding::TensorSlice* slice = shard.Find(weight);
    if (slice == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", weight));
    // A bias is small: read it whole, keep the rows of the rank's slice (KV heads that are not
    // a contiguous run give several ranges, in local order).
    BF_ASSIGN_OR_RETURN(std::vector<float> all, LoadVector(file, names::Layer(layer, pairs[i].second), slice->rows));
    out[i]->clear();
    for (const sharding::Range& r : slice->row_ranges) {
      out[i]->insert(out[i]->end(), all.begin() + r.begin, all.begin() + r.end);
    }
  }
  return biases;
}

StatusOr<Projection> LoadShardProjection(const gguf::GgufFile& file, const sharding::RankShard& shard,
                                         const std::string& name, uint64_t cols, uint64_t rows, ThreadPool* pool) {
  const sharding::TensorSlice* slice = shard.Find(name);
  if (slice == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name));
  if (slice->local_cols() != cols || slice->local_rows() != rows) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": rank ", shard.rank, " slice is ",
                                                   slice->local_rows(), " x ", slice->local_cols(), ", expected ",
                                                   rows, " x ", cols));
  }
  return LoadProjection(file, *slice, pool);
}

StatusOr<std::vector<float>> LoadShardVector(const gguf::GgufFile& file, const sharding::RankShard& shard,
                                             const std::string& name, uint64_t n) {
  const sharding::TensorSlice* slice = shard.Find(name);
  if (slice == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name));
  if (slice->local_cols() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": rank ", shard.rank, " slice holds ",
                                                   slice->local_cols(), " elements, expected ", n));
  }
  return LoadVector(file, *slice);
}

StatusOr<LayerWeights> LoadCommonLayerWeights(const gguf::GgufFile& file, const sharding::RankShard& shard,
                                              const ModelDims& d, uint32_t layer, ThreadPool* pool) {
  using model::tensor_names::Layer;
  const uint64_t e = d.n_embd;
  LayerWeights w;
  BF_ASSIGN_OR_RETURN(w.attn_norm, LoadShardVector(file, shard, Layer(layer, "attn_norm.weight"), e));
  BF_ASSIGN_OR_RETURN(w.ffn_norm, LoadShardVector(file, shard, Layer(layer, "ffn_norm.weight"), e));
  BF_ASSIGN_OR_RETURN(w.wq, LoadShardProjection(file, shard, Layer(layer, "attn_q.weight"), e, d.q_dim(), pool));
  BF_ASSIGN_OR_RETURN(w.wk, LoadShardProjection(file, shard, Layer(layer, "attn_k.weight"), e, d.kv_dim(), pool));
  BF_ASSIGN_OR_RETURN(w.wv, LoadShardProjection(file, shard, Layer(layer, "attn_v.weight"), e, d.kv_dim(), pool));
  BF_ASSIGN_OR_RETURN(w.wo, LoadShardProjection(file, shard, Layer(layer, "attn_output.weight"), d.q_dim(), e, pool));
  BF_ASSIGN_OR_RETURN(w.w_gate, LoadShardProjection(file, shard, Layer(layer, "ffn_gate.weight"), e, d.n_ff, pool));
  BF_ASSIGN_OR_RETURN(w.w_up, LoadShardProjection(file, shard, Layer(layer, "ffn_up.weight"), e, d.n_ff, pool));
  BF_ASSIGN_OR_RETURN(w.w_down, LoadShardProjection(file, shard, Layer(layer, "ffn_down.weight"), d.n_ff, e, pool));
  return w;
}

}  // namespace bitfleet::worker

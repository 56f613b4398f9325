#include "worker/cuda_model_runner.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/block_table.h"
#include "cache/kv_storage_cuda.h"
#include "core/logging.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/cuda_graph.h"
#include "kernels/cuda/cuda_matmul.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/ops_launch.h"
#include "sharding/shard_plan.h"
#include "worker/decoder_layers.h"
#include "worker/model_weights.h"
#include "worker/step_context.h"

namespace bitfleet::worker {

namespace kc = kernels::cuda;

namespace {

// A weight matrix on the device and its optional per-tensor output scale.
struct DeviceProjection {
  std::unique_ptr<kc::CudaWeight> weight;
  std::optional<float> scale;
};

struct DeviceLayer {
  kc::DeviceBuffer attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm;  // sub-norms: BitNet only
  DeviceProjection wq, wk, wv, wo, w_gate, w_up, w_down;
};

StatusOr<kc::DeviceBuffer> UploadFloats(const std::vector<float>& v) {
  BF_ASSIGN_OR_RETURN(kc::DeviceBuffer buf, kc::DeviceBuffer::Allocate(v.size() * sizeof(float)));
  BF_RETURN_IF_ERROR(buf.Upload(v.data(), v.size() * sizeof(float)));
  return buf;
}

// Matrix `name` of GGUF shape [cols, rows], whole (TP=1), repacked for the GPU.
StatusOr<DeviceProjection> LoadDeviceProjection(const gguf::GgufFile& file, const sharding::RankShard& shard,
                                                const std::string& name, uint64_t cols, uint64_t rows) {
  const sharding::TensorSlice* slice = shard.Find(name);
  if (slice == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name));
  if (slice->local_cols() != cols || slice->local_rows() != rows) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is ", slice->local_cols(), " x ",
                                                   slice->local_rows(), ", expected ", cols, " x ", rows));
  }
  std::vector<uint8_t> storage;
  BF_ASSIGN_OR_RETURN(const std::span<const uint8_t> bytes, SliceBytes(file, *slice, &storage));
  DeviceProjection p;
  StatusOr<std::unique_ptr<kc::CudaWeight>> w = kc::CudaWeight::Create(slice->type, cols, rows, bytes);
  if (!w.ok()) {
    return Status(w.status().code(), absl::StrCat("tensor ", name, ": ", std::string(w.status().message())));
  }
  p.weight = std::move(w).value();
  BF_ASSIGN_OR_RETURN(p.scale, ProjectionScale(file, name));
  return p;
}

}  // namespace

class CudaModelRunnerImpl {
 public:
  static StatusOr<std::unique_ptr<CudaModelRunnerImpl>> Create(std::shared_ptr<const gguf::GgufFile> file,
                                                               const RunnerOptions& options);
  ~CudaModelRunnerImpl() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  StatusOr<StepLogits> Step(std::span<const SequenceStep> batch);

  std::shared_ptr<const gguf::GgufFile> file_;
  model::ModelConfig config_;
  RunnerOptions options_;
  ModelDims dims_;
  bool bitnet_ = false;
  sharding::ShardPlan plan_;
  TokenEmbedding embedding_;
  std::vector<DeviceLayer> layers_;
  kc::DeviceBuffer output_norm_;
  DeviceProjection lm_head_;
  std::unique_ptr<cache::KvStorageCuda> kv_;
  uint64_t weight_bytes_ = 0;
  std::string device_label_;  // kernel_variant()
  mutable sharding::SingleRankCommunicator single_rank_;
  cudaStream_t stream_ = nullptr;

  // Step buffers, sized at Create (device unless named host_).
  std::unique_ptr<kc::CudaActivations> acts_;
  kc::DeviceBuffer x_, xn_, q_, k_, v_, attn_, gate_, up_, hidden_, proj_, head_in_, logits_;
  kc::DeviceBuffer positions_, token_seq_, block_tables_, attention_ws_;
  int64_t attention_ws_floats_ = 0;
  int max_blocks_per_seq_ = 0;

  // Decode steps (every sequence one token, one logit row) replay CUDA graphs keyed by (sequences,
  // attention key bound): a step is ~20 launches per layer, and launching them one by one costs
  // more than they run at small batches. A key is captured the second time it comes (one-off
  // shapes stay plain; the first run also does the kernels' one-time setup outside a capture).
  // The key bound is max_keys rounded up to kKeyBucket, in plain decode steps too, so a replay
  // computes exactly what a plain step of the same batch computes.
  static constexpr int kKeyBucket = 256;
  static constexpr size_t kMaxGraphs = 512;  // beyond: start over (a sweep of batch shapes)
  bool decode_graphs_ = true;
  std::map<std::pair<int, int>, kc::CudaGraph> graphs_;
  std::set<std::pair<int, int>> seen_keys_;
  int64_t graph_launches_ = 0;
  std::vector<float> host_x_, host_logits_;
  std::vector<int32_t> host_positions_, host_token_seq_, host_tables_, seq_begin_, logit_begin_, logit_src_;

 private:
  Status Cuda(cudaError_t error, const char* what) const { return kc::CudaStatus(error, what); }
  // out = scale · W · in for n tokens (float input `in`, quantized on the device when W is, at
  // kernels::ActScalingFor(W's type) as on the CPU: per token for ternary, per 32-column block
  // for Q4_0 / Q4_1 / Q8_0).
  Status Project(const DeviceProjection& w, const float* in, int n, float* out);
  // The same for several projections of one input, quantized once when all are quantized at one
  // scaling (otherwise each quantizes its own copy, as Project).
  Status ProjectAll(std::initializer_list<std::pair<const DeviceProjection*, float*>> projections, const float* in,
                    int n, int cols);
  Status Layer(int l, int n, const kc::PagedKvBatch& kv_batch, int max_keys);
  // Every layer, then the logit rows through the output norm and the LM head into logits_: the
  // device work of a step, enqueued on stream_ (what a decode graph captures).
  Status Forward(int n_tokens, int n_rows, const kc::PagedKvBatch& kv_batch, int max_keys);
  // Forward for a decode step, through its graph when there is one (capturing it on the key's
  // second step). A failed capture turns graphs off for this runner, with a warning, and the
  // step runs plain.
  Status DecodeForward(int n_seqs, const kc::PagedKvBatch& kv_batch, int key_bound);
};

StatusOr<std::unique_ptr<CudaModelRunnerImpl>> CudaModelRunnerImpl::Create(std::shared_ptr<const gguf::GgufFile> file,
                                                                           const RunnerOptions& options) {
  std::string reason;
  if (kc::UsableCudaDevices(&reason) == 0) return absl::FailedPreconditionError(reason);
  auto impl = std::make_unique<CudaModelRunnerImpl>();
  int device = 0;
  cudaDeviceProp prop{};
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaGetDevice(&device), "current device"));
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaGetDeviceProperties(&prop, device), "device properties"));
  impl->device_label_ = absl::StrCat("cuda sm_", prop.major, prop.minor, " (", prop.name, ")");
  if (const char* graphs = std::getenv("BITFLEET_CUDA_GRAPHS"); graphs != nullptr && std::string(graphs) == "0") {
    impl->decode_graphs_ = false;
  }
  impl->file_ = std::move(file);
  const gguf::GgufFile& f = *impl->file_;
  BF_ASSIGN_OR_RETURN(impl->config_, model::ReadModelConfig(f));
  const model::ModelConfig& c = impl->config_;
  BF_RETURN_IF_ERROR(model::ValidateTensors(c, f));
  BF_RETURN_IF_ERROR(CheckRunnerShapes(c));
  impl->options_ = options;
  impl->options_.threads = 1;
  impl->options_.communicator = nullptr;
  impl->options_.gather_logits = false;
  BF_RETURN_IF_ERROR(ResolveRunnerOptions(c, &impl->options_));
  const RunnerOptions& o = impl->options_;
  if (o.kv_type != cache::KvType::kF16) return absl::UnimplementedError("the CUDA runner keeps an f16 KV cache only");
  BF_ASSIGN_OR_RETURN(impl->plan_, sharding::ShardPlan::Create(c, f, 1));
  const sharding::RankShard& shard = impl->plan_.rank(0);
  impl->dims_ = ModelDims::FromConfig(c);
  const ModelDims& d = impl->dims_;
  impl->bitnet_ = c.arch == model::Arch::kBitnet || c.has_sub_norms;

  namespace names = model::tensor_names;
  BF_ASSIGN_OR_RETURN(impl->embedding_, TokenEmbedding::Load(f, *shard.Find(names::kTokenEmbd)));
  BF_ASSIGN_OR_RETURN(const std::vector<float> output_norm, LoadShardVector(f, shard, names::kOutputNorm, c.n_embd));
  BF_ASSIGN_OR_RETURN(impl->output_norm_, UploadFloats(output_norm));
  const char* head_name = f.FindTensor(names::kOutput) != nullptr ? names::kOutput : names::kTokenEmbd;
  BF_ASSIGN_OR_RETURN(impl->lm_head_, LoadDeviceProjection(f, shard, head_name, c.n_embd, c.n_vocab));
  impl->weight_bytes_ += impl->lm_head_.weight->bytes();
  for (uint32_t i = 0; i < c.n_layer; ++i) {
    using names::Layer;
    DeviceLayer L;
    auto vec = [&](const char* suffix, uint64_t n) -> StatusOr<kc::DeviceBuffer> {
      BF_ASSIGN_OR_RETURN(const std::vector<float> v, LoadShardVector(f, shard, Layer(i, suffix), n));
      return UploadFloats(v);
    };
    auto mat = [&](const char* suffix, uint64_t cols, uint64_t rows) -> StatusOr<DeviceProjection> {
      BF_ASSIGN_OR_RETURN(DeviceProjection p, LoadDeviceProjection(f, shard, Layer(i, suffix), cols, rows));
      impl->weight_bytes_ += p.weight->bytes();
      return p;
    };
    BF_ASSIGN_OR_RETURN(L.attn_norm, vec(names::kAttnNorm, d.n_embd));
    BF_ASSIGN_OR_RETURN(L.ffn_norm, vec(names::kFfnNorm, d.n_embd));
    if (impl->bitnet_) {
      BF_ASSIGN_OR_RETURN(L.attn_sub_norm, vec(names::kAttnSubNorm, d.q_dim()));
      BF_ASSIGN_OR_RETURN(L.ffn_sub_norm, vec(names::kFfnSubNorm, d.n_ff));
    }
    BF_ASSIGN_OR_RETURN(L.wq, mat(names::kAttnQ, d.n_embd, d.q_dim()));
    BF_ASSIGN_OR_RETURN(L.wk, mat(names::kAttnK, d.n_embd, d.kv_dim()));
    BF_ASSIGN_OR_RETURN(L.wv, mat(names::kAttnV, d.n_embd, d.kv_dim()));
    BF_ASSIGN_OR_RETURN(L.wo, mat(names::kAttnOutput, d.q_dim(), d.n_embd));
    BF_ASSIGN_OR_RETURN(L.w_gate, mat(names::kFfnGate, d.n_embd, d.n_ff));
    BF_ASSIGN_OR_RETURN(L.w_up, mat(names::kFfnUp, d.n_embd, d.n_ff));
    BF_ASSIGN_OR_RETURN(L.w_down, mat(names::kFfnDown, d.n_ff, d.n_embd));
    impl->layers_.push_back(std::move(L));
  }

  cache::KvStorageOptions kv;
  kv.num_layers = static_cast<int>(c.n_layer);
  kv.n_kv_heads = d.n_head_kv;
  kv.head_dim = d.head_dim;
  kv.num_blocks = o.kv_blocks;
  kv.block_size = o.kv_block_size;
  BF_ASSIGN_OR_RETURN(impl->kv_, cache::KvStorageCuda::Create(kv));

  // Step buffers for max_step_tokens tokens and max_logit_rows rows.
  const uint64_t t = static_cast<uint64_t>(o.max_step_tokens);
  const uint64_t rows = static_cast<uint64_t>(o.max_logit_rows);
  auto floats = [](uint64_t n) { return kc::DeviceBuffer::Allocate(n * sizeof(float)); };
  BF_ASSIGN_OR_RETURN(impl->x_, floats(t * d.n_embd));
  BF_ASSIGN_OR_RETURN(impl->xn_, floats(t * d.n_embd));
  BF_ASSIGN_OR_RETURN(impl->q_, floats(t * d.q_dim()));
  BF_ASSIGN_OR_RETURN(impl->k_, floats(t * d.kv_dim()));
  BF_ASSIGN_OR_RETURN(impl->v_, floats(t * d.kv_dim()));
  BF_ASSIGN_OR_RETURN(impl->attn_, floats(t * d.q_dim()));
  BF_ASSIGN_OR_RETURN(impl->gate_, floats(t * d.n_ff));
  BF_ASSIGN_OR_RETURN(impl->up_, floats(t * d.n_ff));
  BF_ASSIGN_OR_RETURN(impl->hidden_, floats(t * d.n_ff));
  BF_ASSIGN_OR_RETURN(impl->proj_, floats(t * d.n_embd));
  BF_ASSIGN_OR_RETURN(impl->head_in_, floats(rows * d.n_embd));
  BF_ASSIGN_OR_RETURN(impl->logits_, floats(rows * c.n_vocab));
  const uint64_t widest = std::max<uint64_t>({static_cast<uint64_t>(d.n_embd), static_cast<uint64_t>(d.q_dim()),
                                              static_cast<uint64_t>(d.n_ff)});
  BF_ASSIGN_OR_RETURN(impl->acts_, kc::CudaActivations::Create(o.max_step_tokens, widest));
  impl->max_blocks_per_seq_ = static_cast<int>(cache::BlocksForTokens(o.max_context, o.kv_block_size));
  BF_ASSIGN_OR_RETURN(impl->positions_, kc::DeviceBuffer::Allocate(t * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(impl->token_seq_, kc::DeviceBuffer::Allocate(t * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(impl->block_tables_,
                      kc::DeviceBuffer::Allocate(static_cast<uint64_t>(o.max_step_sequences) *
                                                 impl->max_blocks_per_seq_ * sizeof(int32_t)));
  impl->attention_ws_floats_ =
      kc::AttentionSplitWorkspaceFloats(o.max_step_tokens, d.n_head, d.head_dim, o.max_context);
  if (impl->attention_ws_floats_ > 0) {
    BF_ASSIGN_OR_RETURN(impl->attention_ws_, floats(static_cast<uint64_t>(impl->attention_ws_floats_)));
  }
  impl->host_x_.assign(t * d.n_embd, 0.0f);
  impl->host_logits_.assign(rows * c.n_vocab, 0.0f);
  impl->host_positions_.assign(t, 0);
  impl->host_token_seq_.assign(t, 0);
  impl->host_tables_.assign(static_cast<size_t>(o.max_step_sequences) * impl->max_blocks_per_seq_, 0);
  impl->seq_begin_.assign(o.max_step_sequences + 1, 0);
  impl->logit_begin_.assign(o.max_step_sequences + 1, 0);
  impl->logit_src_.assign(rows, 0);
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaStreamCreateWithFlags(&impl->stream_, cudaStreamNonBlocking), "stream"));
  // The allocations' zero fills run on the legacy stream, which the runner's non-blocking stream
  // does not wait for: finish them before the first Step.
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaDeviceSynchronize(), "load"));

  const double mib = 1048576.0;
  Logger("worker")->info("loaded {} ({}) on {}: {} layers, n_embd {}, vocab {}, weights {:.1f} MiB, "
                         "KV {} blocks x {}",
                         c.name, c.arch_name, impl->device_label_, c.n_layer, c.n_embd, c.n_vocab,
                         impl->weight_bytes_ / mib, o.kv_blocks,
                         o.kv_block_size);
  return impl;
}

Status CudaModelRunnerImpl::Project(const DeviceProjection& w, const float* in, int n, float* out) {
  BF_RETURN_IF_ERROR(kc::MatMulCuda(*w.weight, in, n, out, acts_.get(), stream_));
  if (w.scale.has_value()) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchScale(out, int64_t{n} * w.weight->rows(), *w.scale, stream_), "scale"));
  }
  return absl::OkStatus();
}

Status CudaModelRunnerImpl::ProjectAll(std::initializer_list<std::pair<const DeviceProjection*, float*>> projections,
                                       const float* in, int n, int cols) {
  // One shared int8 copy needs one scaling: mixed types (ternary next to Q4, say) quantize per
  // projection, as worker/layer_ops.cc does on the CPU.
  if (projections.size() == 0) return absl::OkStatus();
  const kernels::ActScaling scaling = kernels::ActScalingFor(projections.begin()->first->weight->type());
  bool shared = true;
  for (const auto& [w, out] : projections) {
    shared = shared && w->weight->quantized() && kernels::ActScalingFor(w->weight->type()) == scaling;
  }
  if (!shared) {
    for (const auto& [w, out] : projections) BF_RETURN_IF_ERROR(Project(*w, in, n, out));
    return absl::OkStatus();
  }
  BF_ASSIGN_OR_RETURN(const kc::ActivationView view, kc::QuantizeActivationsCuda(in, n, static_cast<uint64_t>(cols),
                                                                                 scaling, nullptr, *acts_, stream_));
  for (const auto& [w, out] : projections) {
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*w->weight, view, out, stream_));
    if (w->scale.has_value()) {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchScale(out, int64_t{n} * w->weight->rows(), *w->scale, stream_), "scale"));
    }
  }
  return absl::OkStatus();
}

// One decoder layer over x (n tokens), in place. Llama: x += Wo·Attn(Norm(x)); x += Wdown·
// (act(Wgate·Norm(x)) ⊙ Wup·Norm(x)). BitNet adds a sub-norm before Wo and before Wdown.
Status CudaModelRunnerImpl::Layer(int l, int n, const kc::PagedKvBatch& kv_batch, int max_keys) {
  const DeviceLayer& L = layers_[l];
  const ModelDims& d = dims_;
  cudaStream_t s = stream_;
  float* x = x_.as<float>();
  float* xn = xn_.as<float>();
  const int64_t embd_values = int64_t{n} * d.n_embd;

  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, L.attn_norm.as<float>(), n, d.n_embd, d.rms_eps, xn, s), "norm"));
  BF_RETURN_IF_ERROR(ProjectAll({{&L.wq, q_.as<float>()}, {&L.wk, k_.as<float>()}, {&L.wv, v_.as<float>()}}, xn, n,
                                d.n_embd));
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRope(q_.as<float>(), positions_.as<int32_t>(), n, d.n_head, d.head_dim,
                                         d.rope_dim, d.rope_freq_base, d.rope_neox, s),
                          "rope q"));
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRope(k_.as<float>(), positions_.as<int32_t>(), n, d.n_head_kv, d.head_dim,
                                         d.rope_dim, d.rope_freq_base, d.rope_neox, s),
                          "rope k"));
  const kernels::PagedKv kv = kv_->Layer(l);
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchWriteKv(kv, kv_batch, n, k_.as<float>(), v_.as<float>(), s), "kv write"));
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchAttentionPagedSplit(q_.as<float>(), n, d.n_head, kv, kv_batch,
                                                        1.0f / std::sqrt(static_cast<float>(d.head_dim)), max_keys,
                                                        attention_ws_.as<float>(), attention_ws_floats_,
                                                        attn_.as<float>(), s),
                          "attention"));
  if (bitnet_) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(attn_.as<float>(), L.attn_sub_norm.as<float>(), n, d.q_dim(), d.rms_eps,
                                              attn_.as<float>(), s),
                            "attention sub-norm"));
  }
  BF_RETURN_IF_ERROR(Project(L.wo, attn_.as<float>(), n, proj_.as<float>()));
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchAdd(x, proj_.as<float>(), embd_values, x, s), "residual"));

  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, L.ffn_norm.as<float>(), n, d.n_embd, d.rms_eps, xn, s), "norm"));
  BF_RETURN_IF_ERROR(ProjectAll({{&L.w_gate, gate_.as<float>()}, {&L.w_up, up_.as<float>()}}, xn, n, d.n_embd));
  const int64_t ff_values = int64_t{n} * d.n_ff;
  if (d.activation == model::Activation::kRelu2) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRelu2Mul(gate_.as<float>(), up_.as<float>(), ff_values, hidden_.as<float>(), s),
                            "relu2"));
  } else {
    BF_RETURN_IF_ERROR(
        Cuda(kc::LaunchSiluMul(gate_.as<float>(), up_.as<float>(), ff_values, hidden_.as<float>(), s), "silu"));
  }
  if (bitnet_) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(hidden_.as<float>(), L.ffn_sub_norm.as<float>(), n, d.n_ff, d.rms_eps,
                                              hidden_.as<float>(), s),
                            "ffn sub-norm"));
  }
  BF_RETURN_IF_ERROR(Project(L.w_down, hidden_.as<float>(), n, proj_.as<float>()));
  return Cuda(kc::LaunchAdd(x, proj_.as<float>(), embd_values, x, s), "residual");
}

Status CudaModelRunnerImpl::Forward(int n_tokens, int n_rows, const kc::PagedKvBatch& kv_batch, int max_keys) {
  for (int l = 0; l < static_cast<int>(layers_.size()); ++l) BF_RETURN_IF_ERROR(Layer(l, n_tokens, kv_batch, max_keys));

  // The rows that need logits: gathered, normalized, through the LM head.
  const int n_embd = dims_.n_embd;
  const uint64_t row_bytes = static_cast<uint64_t>(n_embd) * sizeof(float);
  for (int r = 0; r < n_rows; ++r) {
    BF_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(head_in_.as<float>() + static_cast<size_t>(r) * n_embd,
                                            x_.as<float>() + static_cast<size_t>(logit_src_[r]) * n_embd, row_bytes,
                                            cudaMemcpyDeviceToDevice, stream_),
                            "logit rows"));
  }
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(head_in_.as<float>(), output_norm_.as<float>(), n_rows, n_embd,
                                            dims_.rms_eps, head_in_.as<float>(), stream_),
                          "output norm"));
  BF_RETURN_IF_ERROR(Project(lm_head_, head_in_.as<float>(), n_rows, logits_.as<float>()));
  return absl::OkStatus();
}

Status CudaModelRunnerImpl::DecodeForward(int n_seqs, const kc::PagedKvBatch& kv_batch, int key_bound) {
  if (!decode_graphs_) return Forward(n_seqs, n_seqs, kv_batch, key_bound);
  const std::pair<int, int> key{n_seqs, key_bound};
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    ++graph_launches_;
    return it->second.Launch(stream_);
  }
  if (seen_keys_.insert(key).second) return Forward(n_seqs, n_seqs, kv_batch, key_bound);
  if (graphs_.size() >= kMaxGraphs) graphs_.clear();
  kc::CudaGraph graph;
  const Status captured = graph.Capture(stream_, [&] { return Forward(n_seqs, n_seqs, kv_batch, key_bound); });
  if (!captured.ok()) {
    Logger("worker")->warn("CUDA graph capture failed ({}); decode steps run without graphs from now on",
                           std::string(captured.message()));
    decode_graphs_ = false;
    graphs_.clear();
    return Forward(n_seqs, n_seqs, kv_batch, key_bound);
  }
  ++graph_launches_;
  BF_RETURN_IF_ERROR(graph.Launch(stream_));
  graphs_.emplace(key, std::move(graph));
  return absl::OkStatus();
}

StatusOr<StepLogits> CudaModelRunnerImpl::Step(std::span<const SequenceStep> batch) {
  int n_tokens = 0;
  int n_rows = 0;
  const int n_vocab = static_cast<int>(config_.n_vocab);
  BF_RETURN_IF_ERROR(ValidateStepBatch(batch, options_, n_vocab, &n_tokens, &n_rows));
  const int n_seqs = static_cast<int>(batch.size());
  if (n_seqs == 0) return StepLogits(host_logits_.data(), logit_begin_.data(), 0, n_vocab);
  const int n_embd = dims_.n_embd;

  // Host side: embeddings, positions, each token's sequence, block tables, logit rows, uploaded
  // on stream_ so that the step's kernels (or its graph) are ordered after them: a synchronous
  // cudaMemcpy from pageable memory may return before the data reaches the device, and stream_
  // does not wait for the legacy stream. The host buffers are free to refill: the previous Step
  // ended by synchronizing the stream.
  int t = 0;
  int row = 0;
  int max_keys = 1;
  for (int i = 0; i < n_seqs; ++i) {
    const SequenceStep& step = batch[i];
    const int n = static_cast<int>(step.tokens.size());
    seq_begin_[i] = t;
    logit_begin_[i] = row;
    for (int j = 0; j < n; ++j) {
      host_positions_[t + j] = step.start_pos + j;
      host_token_seq_[t + j] = i;
      BF_RETURN_IF_ERROR(embedding_.Lookup(step.tokens[j], host_x_.data() + static_cast<size_t>(t + j) * n_embd));
      if (step.all_logits || j == n - 1) logit_src_[row++] = t + j;
    }
    const int blocks = static_cast<int>(cache::BlocksForTokens(step.start_pos + n, options_.kv_block_size));
    std::copy_n(step.block_table.begin(), blocks, host_tables_.begin() + static_cast<size_t>(i) * max_blocks_per_seq_);
    max_keys = std::max(max_keys, step.start_pos + n);
    t += n;
  }
  seq_begin_[n_seqs] = t;
  logit_begin_[n_seqs] = row;
  BF_RETURN_IF_ERROR(x_.UploadAsync(host_x_.data(), static_cast<uint64_t>(t) * n_embd * sizeof(float), stream_));
  BF_RETURN_IF_ERROR(
      positions_.UploadAsync(host_positions_.data(), static_cast<uint64_t>(t) * sizeof(int32_t), stream_));
  BF_RETURN_IF_ERROR(
      token_seq_.UploadAsync(host_token_seq_.data(), static_cast<uint64_t>(t) * sizeof(int32_t), stream_));
  BF_RETURN_IF_ERROR(block_tables_.UploadAsync(
      host_tables_.data(), static_cast<uint64_t>(n_seqs) * max_blocks_per_seq_ * sizeof(int32_t), stream_));
  const kc::PagedKvBatch kv_batch{token_seq_.as<int32_t>(), positions_.as<int32_t>(), block_tables_.as<int32_t>(),
                                  max_blocks_per_seq_};

  const bool decode = n_tokens == n_seqs && n_rows == n_seqs;
  if (decode) {
    const int key_bound = std::min((max_keys + kKeyBucket - 1) / kKeyBucket * kKeyBucket, options_.max_context);
    BF_RETURN_IF_ERROR(DecodeForward(n_seqs, kv_batch, key_bound));
  } else {
    BF_RETURN_IF_ERROR(Forward(n_tokens, n_rows, kv_batch, max_keys));
  }
  BF_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(host_logits_.data(), logits_.as<float>(),
                                          static_cast<uint64_t>(n_rows) * n_vocab * sizeof(float),
                                          cudaMemcpyDeviceToHost, stream_),
                          "logits"));
  BF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "step"));
  return StepLogits(host_logits_.data(), logit_begin_.data(), n_seqs, n_vocab);
}

StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(std::shared_ptr<const gguf::GgufFile> file,
                                                                   const RunnerOptions& options) {
  if (!file) return absl::InvalidArgumentError("no model file");
  BF_ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunnerImpl> impl,
                      CudaModelRunnerImpl::Create(std::move(file), options));
  return std::unique_ptr<CudaModelRunner>(new CudaModelRunner(std::move(impl)));
}

CudaModelRunner::CudaModelRunner(std::unique_ptr<CudaModelRunnerImpl> impl) : impl_(std::move(impl)) {}
CudaModelRunner::~CudaModelRunner() = default;

StatusOr<StepLogits> CudaModelRunner::Step(std::span<const SequenceStep> batch) { return impl_->Step(batch); }
const model::ModelConfig& CudaModelRunner::config() const { return impl_->config_; }
const RunnerOptions& CudaModelRunner::options() const { return impl_->options_; }
int CudaModelRunner::n_vocab() const { return static_cast<int>(impl_->config_.n_vocab); }
int CudaModelRunner::kv_block_size() const { return impl_->options_.kv_block_size; }
int CudaModelRunner::kv_blocks() const { return impl_->options_.kv_blocks; }
sharding::Communicator& CudaModelRunner::communicator() const { return impl_->single_rank_; }
sharding::Range CudaModelRunner::vocab_slice() const { return {0, impl_->config_.n_vocab}; }
uint64_t CudaModelRunner::weight_stream_bytes_per_token() const {
  return impl_->weight_bytes_ + impl_->embedding_.row_bytes();
}
uint64_t CudaModelRunner::weight_resident_bytes() const { return impl_->weight_bytes_; }
uint64_t CudaModelRunner::weight_mapped_bytes() const { return impl_->embedding_.mapped_bytes(); }
std::string CudaModelRunner::kernel_variant() const { return impl_->device_label_; }
void CudaModelRunner::set_decode_graphs(bool on) {
  impl_->decode_graphs_ = on;
  if (!on) impl_->graphs_.clear();
}
bool CudaModelRunner::decode_graphs() const { return impl_->decode_graphs_; }
int64_t CudaModelRunner::decode_graph_launches() const { return impl_->graph_launches_; }

}  // namespace bitfleet::worker

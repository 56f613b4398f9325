#include "worker/cuda_model_runner.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/block_table.h"
#include "cache/kv_storage_cuda.h"
#include "core/logging.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/cuda_graph.h"
#include "kernels/cuda/cuda_matmul.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/ops_launch.h"
#include "sharding/local_rank.h"
#include "sharding/shard_plan.h"
#if defined(BITFLEET_HAVE_NCCL)
#include "sharding/nccl_communicator.h"
#endif
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
  kc::DeviceBuffer q_bias, k_bias, v_bias;                              // Qwen2 only
  DeviceProjection wq, wk, wv, wo, w_gate, w_up, w_down;
};

StatusOr<kc::DeviceBuffer> UploadFloats(const std::vector<float>& v) {
  BF_ASSIGN_OR_RETURN(kc::DeviceBuffer buf, kc::DeviceBuffer::Allocate(v.size() * sizeof(float)));
  BF_RETURN_IF_ERROR(buf.Upload(v.data(), v.size() * sizeof(float)));
  return buf;
}

// This rank's slice of matrix `name` (GGUF shape [cols, rows] locally), repacked for the GPU.
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

// Device memory the KV pool leaves free whatever the utilization: what the runner allocates after
// the pool (CUDA graph instances, kernel modules loaded on first launch, the driver's own needs).
constexpr uint64_t kDeviceReserveBytes = uint64_t{512} << 20;

// KV blocks that fit within `utilization` of the device's total memory, less what is in use now
// (this runner's weights and buffers, and anything else on the device) and kDeviceReserveBytes.
// RESOURCE_EXHAUSTED when that is less than one full context.
StatusOr<int> KvBlocksForMemory(const cache::KvStorageOptions& kv, double utilization, int max_context) {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaMemGetInfo(&free_bytes, &total_bytes), "device memory"));
  cache::KvStorageOptions one = kv;
  one.num_blocks = 1;
  BF_ASSIGN_OR_RETURN(const uint64_t block_bytes, cache::KvStorageCuda::BytesFor(one));
  const double budget = utilization * static_cast<double>(total_bytes) - static_cast<double>(total_bytes - free_bytes) -
                        static_cast<double>(kDeviceReserveBytes);
  const uint64_t fits =
      budget > 0 && block_bytes > 0 ? static_cast<uint64_t>(budget / static_cast<double>(block_bytes)) : 0;
  const uint64_t context_blocks = cache::BlocksForTokens(max_context, kv.block_size);
  if (fits < context_blocks) {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the KV cache gets %.2f GiB of the device (%.2f of its %.1f GiB, less %.2f GiB in use and %.1f GiB kept "
        "free): %d tokens, fewer than one %d-token context; raise --gpu-memory-utilization or lower --ctx",
        std::max(0.0, budget) / gib, utilization, total_bytes / gib, (total_bytes - free_bytes) / gib,
        kDeviceReserveBytes / gib,
        static_cast<int>(fits * kv.block_size), max_context));
  }
  return static_cast<int>(std::min(fits, cache::kMaxKvPoolBlocks));
}

}  // namespace

class CudaModelRunnerImpl {
 public:
  static StatusOr<std::unique_ptr<CudaModelRunnerImpl>> Create(std::shared_ptr<const gguf::GgufFile> file,
                                                               const RunnerOptions& options);
  ~CudaModelRunnerImpl() {
#if defined(BITFLEET_HAVE_NCCL)
    // The communicator outlives the runner. Collectives still queued (a failed step) finish or
    // abort within its deadline before the buffers they use are freed; then it gets its own
    // stream back, undeferred.
    if (nccl_ != nullptr) {
      if (!nccl_->failed()) nccl_->Synchronize().IgnoreError();
      nccl_->set_deferred(false);
      if (nccl_->stream() == stream_) nccl_->SetStream(nullptr);
    }
#endif
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
  // The device current at Create. Step makes it current on its calling thread, which need not be
  // the creating one (a worker's step thread, serve --in-process's dispatch thread), and a
  // thread's current device starts at 0 whatever another thread set.
  int device_ = 0;
  mutable sharding::SingleRankCommunicator single_rank_;
  sharding::Communicator* comm_ = nullptr;  // options' communicator, or single_rank_
#if defined(BITFLEET_HAVE_NCCL)
  // comm_ when it is NCCL: collectives then run on device buffers, queued on stream_ (deferred
  // mode), and the step waits once, in nccl_->Synchronize(). Null for the other backends, whose
  // collectives are staged through host_comm_.
  sharding::NcclCommunicator* nccl_ = nullptr;
#endif
  bool device_collectives() const {
#if defined(BITFLEET_HAVE_NCCL)
    return nccl_ != nullptr;
#else
    return false;
#endif
  }
  // The layers all-reduce: under TP>1, and with an NCCL communicator of any size (at TP=1 its
  // all-reduces are identities, which lets one GPU check the runner's NCCL path).
  bool collectives_ = false;
  const sharding::RankShard* shard_ = nullptr;  // plan_'s entry for this rank
  bool gather_ = false;                         // whole logit rows under TP>1 (gather_logits)
  cudaStream_t stream_ = nullptr;

  // Step buffers, sized at Create (device unless named host_).
  std::unique_ptr<kc::CudaActivations> acts_;
  kc::DeviceBuffer x_, xn_, q_, k_, v_, attn_, gate_, up_, hidden_, proj_, head_in_, logits_;
  kc::DeviceBuffer positions_, token_seq_, block_tables_, logit_rows_, attention_ws_;
  // With collectives: the first quantization of a ternary row-parallel input, whose per-token
  // absmax (absmax_acts_->absmax()) is all-reduced in place and quantizes the second into acts_
  // (a buffer of its own, so no copy sits between the two kernels), and the sums of squares of
  // the BitNet sub-norms.
  std::unique_ptr<kc::CudaActivations> absmax_acts_;
  kc::DeviceBuffer sum_sq_;
  int64_t attention_ws_floats_ = 0;
  int max_blocks_per_seq_ = 0;

  // Steps replay CUDA graphs keyed by (tokens, logit rows, attention key bound): a step is ~20
  // launches per layer, and launching them one by one costs more than they run at small batches
  // and short prefills. Everything else a step depends on (token positions, each token's
  // sequence, block tables, which rows get logits) is uploaded to device buffers before the
  // launch, so one graph serves every batch of its key. A key is captured the second time it
  // comes (one-off shapes stay plain; the first run also does the kernels' one-time setup outside
  // a capture). The key bound is max_keys rounded up to kKeyBucket, in plain steps too, so a
  // replay computes exactly what a plain step of the same batch computes.
  using GraphKey = std::tuple<int, int, int>;
  static constexpr int kKeyBucket = 256;
  static constexpr size_t kMaxGraphs = 512;      // beyond: the least recently launched goes
  static constexpr size_t kMaxSeenKeys = 16384;  // keys seen once, remembered up to this many
  struct StepGraph {
    kc::CudaGraph graph;
    int64_t last_launch = 0;  // graph_launches_ at its latest launch
  };
  bool step_graphs_ = true;
  std::map<GraphKey, StepGraph> graphs_;
  std::set<GraphKey> seen_keys_;
  int64_t graph_launches_ = 0;
  // RMSNorm fused with the int8 quantization of its output (and with the residual add or the
  // squared-ReLU gate before it) wherever the projections it feeds share one scaling: 7 to 8
  // fewer launches per layer, bit for bit the unfused results (kernels/cuda/ops_launch.h).
  bool fused_norms_ = true;
  bool fused_rope_kv_ = false;  // an experiment until measured on a device (docs/cuda.md)
  int64_t fused_norm_launches_ = 0;
  int64_t fused_rope_kv_launches_ = 0;
  // Page-locked: the embeddings go up and the logit rows come back at link speed (a copy to
  // pageable memory is staged through a driver buffer; at batch 32 and a 32k vocabulary the
  // rows are 4 MB a step).
  kc::PinnedHostBuffer host_x_, host_logits_;
  kc::PinnedHostBuffer host_comm_;  // TP>1 without device collectives: the staging buffer
  // gather_: this rank's rows padded to the widest vocabulary slice (page-locked: a copy into
  // pageable memory would block the host on the stream, past the communicator's deadline), and
  // every rank's.
  kc::PinnedHostBuffer local_logits_;
  std::vector<float> gathered_;
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
  // The int8 scaling every projection of `ws` is quantized at, when all are quantized at one
  // scaling (one shared int8 copy of their input can feed them); nullopt otherwise.
  static std::optional<kernels::ActScaling> SharedScaling(std::initializer_list<const DeviceProjection*> ws);
  // out = scale · W · x̂ from activations already quantized into acts_ (`view`).
  Status ProjectQuantized(const DeviceProjection& w, const kc::ActivationView& view, int n, float* out);
  // In place over `count` floats of device memory, after everything queued on stream_: a sum
  // (or max) over the ranks. The identity at TP=1.
  Status AllReduce(float* data, size_t count, bool max);
  // A row-parallel projection (Wo, Wdown): `in` holds this rank's columns of the input; out gets
  // the whole output, summed over the ranks. Ternary inputs are quantized with the whole row's
  // absmax (all-reduced), as at TP=1. Project at TP=1.
  Status ProjectRow(const DeviceProjection& w, const float* in, int n, float* out);
  // BitNet's sub-norm in place over this rank's `dim` columns of rows of `full_dim`: the sums of
  // squares are all-reduced first under TP>1.
  Status SubNorm(const kc::DeviceBuffer& weight, float* x, int n, int dim, int full_dim);
  // One decoder layer over x (n tokens), in place. The layer leaves its last residual (proj_)
  // for the next layer's first norm to add (*pending_add; fused into it where norms are fused,
  // a separate add otherwise), and takes the one the previous layer left.
  Status Layer(int l, int n, const kc::PagedKvBatch& kv_batch, int max_keys, bool* pending_add);
  // Every layer, then the logit rows (logit_rows_) through the output norm and the LM head into
  // logits_: the device work of a step, enqueued on stream_ (what a step graph captures).
  Status Forward(int n_tokens, int n_rows, const kc::PagedKvBatch& kv_batch, int max_keys);
  // Forward through the step's graph when there is one (capturing it on the key's second step).
  // A failed capture turns graphs off for this runner, with a warning, and the step runs plain.
  Status GraphForward(int n_tokens, int n_rows, const kc::PagedKvBatch& kv_batch, int key_bound);
  // The step's logit rows in host_logits_: whole rows, or this rank's vocabulary slice of them.
  StepLogits LogitRows(int n_seqs) const;
};

StatusOr<std::unique_ptr<CudaModelRunnerImpl>> CudaModelRunnerImpl::Create(std::shared_ptr<const gguf::GgufFile> file,
                                                                           const RunnerOptions& options) {
  std::string reason;
  const int n_devices = kc::UsableCudaDevices(&reason);
  if (n_devices == 0) return absl::FailedPreconditionError(reason);
  auto impl = std::make_unique<CudaModelRunnerImpl>();
  impl->comm_ = options.communicator != nullptr ? options.communicator : &impl->single_rank_;
  const int rank = impl->comm_->rank();
  const int tp = impl->comm_->size();
#if defined(BITFLEET_HAVE_NCCL)
  // An NCCL communicator chose the rank's device when it joined its group: the runner goes there.
  if (auto* nccl = dynamic_cast<sharding::NcclCommunicator*>(impl->comm_); nccl != nullptr) {
    impl->nccl_ = nccl;
    BF_RETURN_IF_ERROR(kc::CudaStatus(cudaSetDevice(nccl->device()), "set device"));
  }
#endif
  impl->collectives_ = tp > 1 || impl->device_collectives();
  if (tp > 1 && !impl->device_collectives()) {
    // Any other backend: the GPU of the node-local rank, modulo the visible devices (ranks
    // share a GPU when there are fewer).
    const int local = sharding::NodeLocalRank();
    const int device = local % n_devices;
    if (local >= n_devices || sharding::NodeLocalSize() > n_devices) {
      // Each rank would size its pool by what the device has free when it looks, racing the
      // others' loads: the pool must be given.
      if (options.kv_blocks == 0 && options.gpu_memory_utilization > 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", rank, " shares CUDA device ", device, " with other ranks (", n_devices,
            " visible): the KV pool cannot be sized by device memory; give the pool's size (--kv-blocks)"));
      }
      Logger("worker")->warn("rank {} shares CUDA device {} with other ranks ({} visible)", rank, device, n_devices);
    }
    BF_RETURN_IF_ERROR(kc::CudaStatus(cudaSetDevice(device), "set device"));
  }
  int device = 0;
  cudaDeviceProp prop{};
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaGetDevice(&device), "current device"));
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaGetDeviceProperties(&prop, device), "device properties"));
  impl->device_ = device;
  impl->device_label_ = absl::StrCat("cuda sm_", prop.major, prop.minor, " (", prop.name, ")");
  if (const char* fused = std::getenv("BITFLEET_CUDA_FUSED_NORMS"); fused != nullptr && std::string(fused) == "0") {
    impl->fused_norms_ = false;
  }
  if (const char* fused = std::getenv("BITFLEET_CUDA_FUSED_ROPE_KV"); fused != nullptr && std::string(fused) == "1") {
    impl->fused_rope_kv_ = true;
  }
  if (const char* graphs = std::getenv("BITFLEET_CUDA_GRAPHS"); graphs != nullptr && std::string(graphs) == "0") {
    impl->step_graphs_ = false;
  }
  impl->file_ = std::move(file);
  const gguf::GgufFile& f = *impl->file_;
  BF_ASSIGN_OR_RETURN(impl->config_, model::ReadModelConfig(f));
  const model::ModelConfig& c = impl->config_;
  BF_RETURN_IF_ERROR(model::ValidateTensors(c, f));
  BF_RETURN_IF_ERROR(CheckRunnerShapes(c));
  impl->options_ = options;
  impl->options_.threads = 1;
  BF_RETURN_IF_ERROR(ResolveRunnerOptions(c, &impl->options_));
  const RunnerOptions& o = impl->options_;
  if (o.kv_type != cache::KvType::kF16) return absl::UnimplementedError("the CUDA runner keeps an f16 KV cache only");
  BF_ASSIGN_OR_RETURN(impl->plan_, sharding::ShardPlan::Create(c, f, tp));
  impl->shard_ = &impl->plan_.rank(rank);
  const sharding::RankShard& shard = *impl->shard_;
  // This rank's shapes: its query heads, KV slots and FFN units; the *_full sizes stay whole.
  impl->dims_ = ModelDims::FromConfig(c);
  impl->dims_.n_head = static_cast<int>(shard.heads.size());
  impl->dims_.n_head_kv = static_cast<int>(shard.kv_heads.size());
  impl->dims_.n_ff = static_cast<int>(shard.ffn.size());
  const ModelDims& d = impl->dims_;
  impl->bitnet_ = c.arch == model::Arch::kBitnet || c.has_sub_norms;
  impl->gather_ = o.gather_logits && tp > 1;
  // Staged collectives wait on the host: nothing to capture. Deferred NCCL ones are captured.
  if (tp > 1 && !impl->device_collectives()) impl->step_graphs_ = false;

  namespace names = model::tensor_names;
  // The whole embedding on every rank: rows are read from the file mapping on the host, so a
  // rank can look up any token and the step needs no all-reduce of the embedded rows.
  BF_ASSIGN_OR_RETURN(const sharding::ShardPlan whole, sharding::ShardPlan::Create(c, f, 1));
  BF_ASSIGN_OR_RETURN(impl->embedding_, TokenEmbedding::Load(f, *whole.rank(0).Find(names::kTokenEmbd)));
  BF_ASSIGN_OR_RETURN(const std::vector<float> output_norm, LoadShardVector(f, shard, names::kOutputNorm, c.n_embd));
  BF_ASSIGN_OR_RETURN(impl->output_norm_, UploadFloats(output_norm));
  const char* head_name = f.FindTensor(names::kOutput) != nullptr ? names::kOutput : names::kTokenEmbd;
  const uint64_t local_vocab = shard.vocab.size();
  BF_ASSIGN_OR_RETURN(impl->lm_head_, LoadDeviceProjection(f, shard, head_name, c.n_embd, local_vocab));
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
    if (c.qkv_bias) {
      BF_ASSIGN_OR_RETURN(const QkvBiases biases, LoadQkvBiases(f, shard, i));
      BF_ASSIGN_OR_RETURN(L.q_bias, UploadFloats(biases.q));
      BF_ASSIGN_OR_RETURN(L.k_bias, UploadFloats(biases.k));
      BF_ASSIGN_OR_RETURN(L.v_bias, UploadFloats(biases.v));
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
  BF_ASSIGN_OR_RETURN(impl->logits_, floats(rows * local_vocab));
  const uint64_t widest = std::max<uint64_t>({static_cast<uint64_t>(d.n_embd), static_cast<uint64_t>(d.q_dim()),
                                              static_cast<uint64_t>(d.n_ff)});
  BF_ASSIGN_OR_RETURN(impl->acts_, kc::CudaActivations::Create(o.max_step_tokens, widest));
  impl->max_blocks_per_seq_ = static_cast<int>(cache::BlocksForTokens(o.max_context, o.kv_block_size));
  BF_ASSIGN_OR_RETURN(impl->positions_, kc::DeviceBuffer::Allocate(t * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(impl->token_seq_, kc::DeviceBuffer::Allocate(t * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(impl->logit_rows_, kc::DeviceBuffer::Allocate(rows * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(impl->block_tables_,
                      kc::DeviceBuffer::Allocate(static_cast<uint64_t>(o.max_step_sequences) *
                                                 impl->max_blocks_per_seq_ * sizeof(int32_t)));
  impl->attention_ws_floats_ =
      kc::AttentionSplitWorkspaceFloats(o.max_step_tokens, d.n_head, d.head_dim, o.max_context);
  if (impl->attention_ws_floats_ > 0) {
    BF_ASSIGN_OR_RETURN(impl->attention_ws_, floats(static_cast<uint64_t>(impl->attention_ws_floats_)));
  }
  BF_ASSIGN_OR_RETURN(impl->host_x_, kc::PinnedHostBuffer::Allocate(t * d.n_embd * sizeof(float)));
  BF_ASSIGN_OR_RETURN(impl->host_logits_, kc::PinnedHostBuffer::Allocate(rows * c.n_vocab * sizeof(float)));
  if (impl->collectives_) {
    BF_ASSIGN_OR_RETURN(impl->absmax_acts_, kc::CudaActivations::Create(o.max_step_tokens, widest));
    BF_ASSIGN_OR_RETURN(impl->sum_sq_, floats(t));
    if (!impl->device_collectives()) {
      // The widest all-reduce: a row-parallel output, t × n_embd floats.
      BF_ASSIGN_OR_RETURN(impl->host_comm_, kc::PinnedHostBuffer::Allocate(t * d.n_embd * sizeof(float)));
    }
  }
  if (impl->gather_) {
    const size_t padded = static_cast<size_t>(rows) * impl->plan_.max_vocab_slice();
    BF_ASSIGN_OR_RETURN(impl->local_logits_, kc::PinnedHostBuffer::Allocate(padded * sizeof(float)));
    impl->gathered_.assign(padded * tp, 0.0f);
  }
  impl->host_positions_.assign(t, 0);
  impl->host_token_seq_.assign(t, 0);
  impl->host_tables_.assign(static_cast<size_t>(o.max_step_sequences) * impl->max_blocks_per_seq_, 0);
  impl->seq_begin_.assign(o.max_step_sequences + 1, 0);
  impl->logit_begin_.assign(o.max_step_sequences + 1, 0);
  impl->logit_src_.assign(rows, 0);
  // The KV pool last, so that sizing it by memory sees every other allocation.
  cache::KvStorageOptions kv;
  kv.num_layers = static_cast<int>(c.n_layer);
  kv.n_kv_heads = d.n_head_kv;
  kv.head_dim = d.head_dim;
  kv.num_blocks = o.kv_blocks;
  kv.block_size = o.kv_block_size;
  if (options.kv_blocks == 0 && options.gpu_memory_utilization > 0) {
    BF_ASSIGN_OR_RETURN(kv.num_blocks, KvBlocksForMemory(kv, options.gpu_memory_utilization, o.max_context));
    impl->options_.kv_blocks = kv.num_blocks;
  }
  BF_ASSIGN_OR_RETURN(impl->kv_, cache::KvStorageCuda::Create(kv));
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaStreamCreateWithFlags(&impl->stream_, cudaStreamNonBlocking), "stream"));
#if defined(BITFLEET_HAVE_NCCL)
  // NCCL's collectives run on the runner's stream, ordered after the kernels that feed them, and
  // only queued there: the step waits once, at its end.
  if (impl->nccl_ != nullptr) {
    impl->nccl_->SetStream(impl->stream_);
    impl->nccl_->set_deferred(true);
  }
#endif
  // The allocations' zero fills run on the legacy stream, which the runner's non-blocking stream
  // does not wait for: finish them before the first Step.
  BF_RETURN_IF_ERROR(kc::CudaStatus(cudaDeviceSynchronize(), "load"));

  const double mib = 1048576.0;
  Logger("worker")->info("loaded {} ({}) on {}: {} layers, n_embd {}, vocab {}, weights {:.1f} MiB, "
                         "KV {} blocks x {}",
                         c.name, c.arch_name, impl->device_label_, c.n_layer, c.n_embd, c.n_vocab,
                         impl->weight_bytes_ / mib, o.kv_blocks,
                         o.kv_block_size);
  if (impl->collectives_) {
    Logger("worker")->info(
        "rank {}/{} ({}, {}): heads [{}, {}), {} KV heads ({}), FFN [{}, {}), vocab [{}, {})", rank, tp,
        impl->comm_->backend(),
        impl->device_collectives() ? "collectives queued on the device, steps in CUDA graphs"
                                      : "collectives staged through host memory, steps without CUDA graphs",
        shard.heads.begin, shard.heads.end, shard.kv_heads.size(), shard.kv_split ? "split" : "replicated",
        shard.ffn.begin, shard.ffn.end, shard.vocab.begin, shard.vocab.end);
  }
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
  for (const auto& [w, out] : projections) BF_RETURN_IF_ERROR(ProjectQuantized(*w, view, n, out));
  return absl::OkStatus();
}

std::optional<kernels::ActScaling> CudaModelRunnerImpl::SharedScaling(
    std::initializer_list<const DeviceProjection*> ws) {
  std::optional<kernels::ActScaling> shared;
  for (const DeviceProjection* w : ws) {
    if (!w->weight->quantized()) return std::nullopt;
    const kernels::ActScaling scaling = kernels::ActScalingFor(w->weight->type());
    if (shared.has_value() && *shared != scaling) return std::nullopt;
    shared = scaling;
  }
  return shared;
}

Status CudaModelRunnerImpl::ProjectQuantized(const DeviceProjection& w, const kc::ActivationView& view, int n,
                                             float* out) {
  BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*w.weight, view, out, stream_));
  if (w.scale.has_value()) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchScale(out, int64_t{n} * w.weight->rows(), *w.scale, stream_), "scale"));
  }
  return absl::OkStatus();
}

Status CudaModelRunnerImpl::AllReduce(float* data, size_t count, bool max) {
  if (!collectives_ || count == 0) return absl::OkStatus();
  if (device_collectives()) {
    // NCCL (comm_), in place on the device buffer, queued on stream_ (the step's end waits for it).
    return max ? comm_->AllReduceMax(data, count) : comm_->AllReduceSum(data, count);
  }
  // Staged: the stream's work so far, then the host collective, then back. The next staging's
  // copy into host_comm_ is queued after this one's copy out of it, so one buffer serves all.
  float* host = host_comm_.as<float>();
  const size_t bytes = count * sizeof(float);
  BF_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(host, data, bytes, cudaMemcpyDeviceToHost, stream_), "all-reduce staging"));
  BF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "all-reduce staging"));
  BF_RETURN_IF_ERROR(max ? comm_->AllReduceMax(host, count) : comm_->AllReduceSum(host, count));
  return Cuda(cudaMemcpyAsync(data, host, bytes, cudaMemcpyHostToDevice, stream_), "all-reduce staging");
}

Status CudaModelRunnerImpl::ProjectRow(const DeviceProjection& w, const float* in, int n, float* out) {
  if (!collectives_) return Project(w, in, n, out);
  const uint64_t cols = w.weight->cols();
  if (w.weight->quantized() && kernels::ActScalingFor(w.weight->type()) == kernels::ActScaling::kPerToken) {
    // The first quantization only yields this rank's absmax per token; the second quantizes at
    // the group's. (Per-block scaling needs neither: a K-split falls on block boundaries.)
    BF_RETURN_IF_ERROR(kc::QuantizeActivationsCuda(in, n, cols, kernels::ActScaling::kPerToken, nullptr,
                                                   *absmax_acts_, stream_)
                           .status());
    BF_RETURN_IF_ERROR(AllReduce(absmax_acts_->absmax(), n, /*max=*/true));
    BF_ASSIGN_OR_RETURN(const kc::ActivationView view,
                        kc::QuantizeActivationsCuda(in, n, cols, kernels::ActScaling::kPerToken,
                                                    absmax_acts_->absmax(), *acts_, stream_));
    BF_RETURN_IF_ERROR(ProjectQuantized(w, view, n, out));
  } else {
    BF_RETURN_IF_ERROR(Project(w, in, n, out));
  }
  return AllReduce(out, static_cast<size_t>(n) * w.weight->rows(), /*max=*/false);
}

Status CudaModelRunnerImpl::SubNorm(const kc::DeviceBuffer& weight, float* x, int n, int dim, int full_dim) {
  if (!collectives_) {
    return Cuda(kc::LaunchRmsNorm(x, weight.as<float>(), n, dim, dims_.rms_eps, x, stream_), "sub-norm");
  }
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchSumSquares(x, n, dim, sum_sq_.as<float>(), stream_), "sub-norm sums"));
  BF_RETURN_IF_ERROR(AllReduce(sum_sq_.as<float>(), n, /*max=*/false));
  return Cuda(kc::LaunchRmsNormWithSumSquares(x, weight.as<float>(), n, dim, sum_sq_.as<float>(), full_dim,
                                              dims_.rms_eps, x, stream_),
              "sub-norm");
}

// One decoder layer over x (n tokens), in place. Llama: x += Wo·Attn(Norm(x)); x += Wdown·
// (act(Wgate·Norm(x)) ⊙ Wup·Norm(x)). BitNet adds a sub-norm before Wo and before Wdown. Each
// norm whose output only feeds quantized projections of one scaling runs fused with their
// quantization (fused_norms_); the others run as norm, then quantization inside the matmul.
Status CudaModelRunnerImpl::Layer(int l, int n, const kc::PagedKvBatch& kv_batch, int max_keys, bool* pending_add) {
  const DeviceLayer& L = layers_[l];
  const ModelDims& d = dims_;
  cudaStream_t s = stream_;
  float* x = x_.as<float>();
  float* xn = xn_.as<float>();
  float* proj = proj_.as<float>();
  const int64_t embd_values = int64_t{n} * d.n_embd;
  int8_t* q8 = acts_->q();
  float* absmax = acts_->absmax();
  int32_t* sums = acts_->sums();
  float* steps = acts_->block_steps();
  const auto per_block = [](kernels::ActScaling scaling) { return scaling == kernels::ActScaling::kPerBlock; };

  // Attention input: [x += proj;] norm, Q/K/V.
  const std::optional<kernels::ActScaling> qkv = fused_norms_ ? SharedScaling({&L.wq, &L.wk, &L.wv}) : std::nullopt;
  if (qkv.has_value()) {
    const int64_t stride = kc::ActivationStride(d.n_embd);
    if (*pending_add) {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchAddRmsNormQuantize(x, proj, L.attn_norm.as<float>(), n, d.n_embd, d.rms_eps,
                                                           per_block(*qkv), stride, q8, absmax, sums, steps, s),
                              "residual + norm + quantize"));
    } else {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormQuantize(x, L.attn_norm.as<float>(), n, d.n_embd, d.rms_eps,
                                                        per_block(*qkv), stride, q8, absmax, sums, steps, s),
                              "norm + quantize"));
    }
    ++fused_norm_launches_;
    BF_ASSIGN_OR_RETURN(const kc::ActivationView view, acts_->View(n, d.n_embd, *qkv));
    BF_RETURN_IF_ERROR(ProjectQuantized(L.wq, view, n, q_.as<float>()));
    BF_RETURN_IF_ERROR(ProjectQuantized(L.wk, view, n, k_.as<float>()));
    BF_RETURN_IF_ERROR(ProjectQuantized(L.wv, view, n, v_.as<float>()));
  } else {
    if (*pending_add) BF_RETURN_IF_ERROR(Cuda(kc::LaunchAdd(x, proj, embd_values, x, s), "residual"));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, L.attn_norm.as<float>(), n, d.n_embd, d.rms_eps, xn, s), "norm"));
    BF_RETURN_IF_ERROR(ProjectAll({{&L.wq, q_.as<float>()}, {&L.wk, k_.as<float>()}, {&L.wv, v_.as<float>()}}, xn,
                                  n, d.n_embd));
  }
  *pending_add = false;
  if (config_.qkv_bias) {  // Qwen2: before RoPE and the KV write, as on the CPU
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAddRowBias(q_.as<float>(), L.q_bias.as<float>(), n, d.q_dim(), s), "q bias"));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAddRowBias(k_.as<float>(), L.k_bias.as<float>(), n, d.kv_dim(), s), "k bias"));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAddRowBias(v_.as<float>(), L.v_bias.as<float>(), n, d.kv_dim(), s), "v bias"));
  }

  const kernels::PagedKv kv = kv_->Layer(l);
  if (fused_rope_kv_) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRopeWriteKv(q_.as<float>(), k_.as<float>(), v_.as<float>(), n, d.n_head, kv,
                                                  kv_batch, d.rope_dim, d.rope_freq_base, d.rope_neox, s),
                            "rope + kv write"));
    ++fused_rope_kv_launches_;
  } else {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRope(q_.as<float>(), positions_.as<int32_t>(), n, d.n_head, d.head_dim,
                                           d.rope_dim, d.rope_freq_base, d.rope_neox, s),
                            "rope q"));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRope(k_.as<float>(), positions_.as<int32_t>(), n, d.n_head_kv, d.head_dim,
                                           d.rope_dim, d.rope_freq_base, d.rope_neox, s),
                            "rope k"));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchWriteKv(kv, kv_batch, n, k_.as<float>(), v_.as<float>(), s), "kv write"));
  }
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchAttentionPagedSplit(q_.as<float>(), n, d.n_head, kv, kv_batch,
                                                        1.0f / std::sqrt(static_cast<float>(d.head_dim)), max_keys,
                                                        attention_ws_.as<float>(), attention_ws_floats_,
                                                        attn_.as<float>(), s),
                          "attention"));

  // Attention output: [sub-norm,] Wo.
  // Under TP>1 the sub-norms' sums (and a ternary input's absmax) are all-reduced between the
  // norm and the quantization, so those two stay apart.
  const std::optional<kernels::ActScaling> wo =
      bitnet_ && fused_norms_ && !collectives_ ? SharedScaling({&L.wo}) : std::nullopt;
  if (wo.has_value()) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormQuantize(attn_.as<float>(), L.attn_sub_norm.as<float>(), n, d.q_dim(),
                                                      d.rms_eps, per_block(*wo), kc::ActivationStride(d.q_dim()), q8,
                                                      absmax, sums, steps, s),
                            "attention sub-norm + quantize"));
    ++fused_norm_launches_;
    BF_ASSIGN_OR_RETURN(const kc::ActivationView view, acts_->View(n, d.q_dim(), *wo));
    BF_RETURN_IF_ERROR(ProjectQuantized(L.wo, view, n, proj));
  } else {
    if (bitnet_) BF_RETURN_IF_ERROR(SubNorm(L.attn_sub_norm, attn_.as<float>(), n, d.q_dim(), d.q_dim_full));
    BF_RETURN_IF_ERROR(ProjectRow(L.wo, attn_.as<float>(), n, proj));
  }

  // FFN input: x += proj, norm, gate and up.
  const std::optional<kernels::ActScaling> gate_up =
      fused_norms_ ? SharedScaling({&L.w_gate, &L.w_up}) : std::nullopt;
  if (gate_up.has_value()) {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAddRmsNormQuantize(x, proj, L.ffn_norm.as<float>(), n, d.n_embd, d.rms_eps,
                                                         per_block(*gate_up), kc::ActivationStride(d.n_embd), q8,
                                                         absmax, sums, steps, s),
                            "residual + norm + quantize"));
    ++fused_norm_launches_;
    BF_ASSIGN_OR_RETURN(const kc::ActivationView view, acts_->View(n, d.n_embd, *gate_up));
    BF_RETURN_IF_ERROR(ProjectQuantized(L.w_gate, view, n, gate_.as<float>()));
    BF_RETURN_IF_ERROR(ProjectQuantized(L.w_up, view, n, up_.as<float>()));
  } else {
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAdd(x, proj, embd_values, x, s), "residual"));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, L.ffn_norm.as<float>(), n, d.n_embd, d.rms_eps, xn, s), "norm"));
    BF_RETURN_IF_ERROR(ProjectAll({{&L.w_gate, gate_.as<float>()}, {&L.w_up, up_.as<float>()}}, xn, n, d.n_embd));
  }

  // FFN output: act(gate) ⊙ up, [sub-norm,] Wdown; the residual is left for the next layer.
  const int64_t ff_values = int64_t{n} * d.n_ff;
  const bool relu2 = d.activation == model::Activation::kRelu2;
  const std::optional<kernels::ActScaling> down =
      bitnet_ && fused_norms_ && !collectives_ ? SharedScaling({&L.w_down}) : std::nullopt;
  if (down.has_value()) {
    const int64_t stride = kc::ActivationStride(d.n_ff);
    if (relu2) {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchRelu2MulRmsNormQuantize(gate_.as<float>(), up_.as<float>(),
                                                                L.ffn_sub_norm.as<float>(), n, d.n_ff, d.rms_eps,
                                                                per_block(*down), stride, q8, absmax, sums, steps, s),
                              "relu2 + ffn sub-norm + quantize"));
    } else {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchSiluMul(gate_.as<float>(), up_.as<float>(), ff_values, hidden_.as<float>(), s),
                              "silu"));
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormQuantize(hidden_.as<float>(), L.ffn_sub_norm.as<float>(), n, d.n_ff,
                                                        d.rms_eps, per_block(*down), stride, q8, absmax, sums, steps,
                                                        s),
                              "ffn sub-norm + quantize"));
    }
    ++fused_norm_launches_;
    BF_ASSIGN_OR_RETURN(const kc::ActivationView view, acts_->View(n, d.n_ff, *down));
    BF_RETURN_IF_ERROR(ProjectQuantized(L.w_down, view, n, proj));
  } else {
    if (relu2) {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchRelu2Mul(gate_.as<float>(), up_.as<float>(), ff_values, hidden_.as<float>(), s),
                              "relu2"));
    } else {
      BF_RETURN_IF_ERROR(
          Cuda(kc::LaunchSiluMul(gate_.as<float>(), up_.as<float>(), ff_values, hidden_.as<float>(), s), "silu"));
    }
    if (bitnet_) BF_RETURN_IF_ERROR(SubNorm(L.ffn_sub_norm, hidden_.as<float>(), n, d.n_ff, d.n_ff_full));
    BF_RETURN_IF_ERROR(ProjectRow(L.w_down, hidden_.as<float>(), n, proj));
  }
  *pending_add = true;
  return absl::OkStatus();
}

Status CudaModelRunnerImpl::Forward(int n_tokens, int n_rows, const kc::PagedKvBatch& kv_batch, int max_keys) {
  bool pending_add = false;
  for (int l = 0; l < static_cast<int>(layers_.size()); ++l) {
    BF_RETURN_IF_ERROR(Layer(l, n_tokens, kv_batch, max_keys, &pending_add));
  }
  if (pending_add) {
    BF_RETURN_IF_ERROR(
        Cuda(kc::LaunchAdd(x_.as<float>(), proj_.as<float>(), int64_t{n_tokens} * dims_.n_embd, x_.as<float>(),
                           stream_),
             "residual"));
  }

  // The rows that need logits: gathered, normalized, through the LM head.
  const int n_embd = dims_.n_embd;
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchGatherRows(x_.as<float>(), logit_rows_.as<int32_t>(), n_rows, n_embd,
                                               head_in_.as<float>(), stream_),
                          "logit rows"));
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(head_in_.as<float>(), output_norm_.as<float>(), n_rows, n_embd,
                                            dims_.rms_eps, head_in_.as<float>(), stream_),
                          "output norm"));
  BF_RETURN_IF_ERROR(Project(lm_head_, head_in_.as<float>(), n_rows, logits_.as<float>()));
  return absl::OkStatus();
}

Status CudaModelRunnerImpl::GraphForward(int n_tokens, int n_rows, const kc::PagedKvBatch& kv_batch, int key_bound) {
  if (!step_graphs_) return Forward(n_tokens, n_rows, kv_batch, key_bound);
  const GraphKey key{n_tokens, n_rows, key_bound};
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    it->second.last_launch = ++graph_launches_;
    return it->second.graph.Launch(stream_);
  }
  if (seen_keys_.size() >= kMaxSeenKeys) seen_keys_.clear();
  if (seen_keys_.insert(key).second) return Forward(n_tokens, n_rows, kv_batch, key_bound);
  if (graphs_.size() >= kMaxGraphs) {
    // Prefill shapes are many; the decode shapes in use are launched every step and stay.
    graphs_.erase(std::min_element(graphs_.begin(), graphs_.end(), [](const auto& a, const auto& b) {
      return a.second.last_launch < b.second.last_launch;
    }));
  }
  kc::CudaGraph graph;
  const Status captured = graph.Capture(stream_, [&] { return Forward(n_tokens, n_rows, kv_batch, key_bound); });
  if (!captured.ok()) {
    Logger("worker")->warn("CUDA graph capture failed ({}); steps run without graphs from now on",
                           std::string(captured.message()));
    step_graphs_ = false;
    graphs_.clear();
    return Forward(n_tokens, n_rows, kv_batch, key_bound);
  }
  BF_RETURN_IF_ERROR(graph.Launch(stream_));
  graphs_.emplace(key, StepGraph{std::move(graph), ++graph_launches_});
  return absl::OkStatus();
}

StatusOr<StepLogits> CudaModelRunnerImpl::Step(std::span<const SequenceStep> batch) {
  int n_tokens = 0;
  int n_rows = 0;
  const int n_vocab = static_cast<int>(config_.n_vocab);
  BF_RETURN_IF_ERROR(ValidateStepBatch(batch, options_, n_vocab, &n_tokens, &n_rows));
  const int n_seqs = static_cast<int>(batch.size());
  if (n_seqs == 0) return LogitRows(0);
  BF_RETURN_IF_ERROR(Cuda(cudaSetDevice(device_), "set device"));
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
      BF_RETURN_IF_ERROR(embedding_.Lookup(step.tokens[j], host_x_.as<float>() + static_cast<size_t>(t + j) * n_embd));
      if (step.all_logits || j == n - 1) logit_src_[row++] = t + j;
    }
    const int blocks = static_cast<int>(cache::BlocksForTokens(step.start_pos + n, options_.kv_block_size));
    std::copy_n(step.block_table.begin(), blocks, host_tables_.begin() + static_cast<size_t>(i) * max_blocks_per_seq_);
    max_keys = std::max(max_keys, step.start_pos + n);
    t += n;
  }
  seq_begin_[n_seqs] = t;
  logit_begin_[n_seqs] = row;
  BF_RETURN_IF_ERROR(x_.UploadAsync(host_x_.as<float>(), static_cast<uint64_t>(t) * n_embd * sizeof(float), stream_));
  BF_RETURN_IF_ERROR(
      positions_.UploadAsync(host_positions_.data(), static_cast<uint64_t>(t) * sizeof(int32_t), stream_));
  BF_RETURN_IF_ERROR(
      token_seq_.UploadAsync(host_token_seq_.data(), static_cast<uint64_t>(t) * sizeof(int32_t), stream_));
  BF_RETURN_IF_ERROR(block_tables_.UploadAsync(
      host_tables_.data(), static_cast<uint64_t>(n_seqs) * max_blocks_per_seq_ * sizeof(int32_t), stream_));
  BF_RETURN_IF_ERROR(
      logit_rows_.UploadAsync(logit_src_.data(), static_cast<uint64_t>(n_rows) * sizeof(int32_t), stream_));
  const kc::PagedKvBatch kv_batch{token_seq_.as<int32_t>(), positions_.as<int32_t>(), block_tables_.as<int32_t>(),
                                  max_blocks_per_seq_};

  const int key_bound = std::min((max_keys + kKeyBucket - 1) / kKeyBucket * kKeyBucket, options_.max_context);
  if (Status forward = GraphForward(n_tokens, n_rows, kv_batch, key_bound); !forward.ok()) {
#if defined(BITFLEET_HAVE_NCCL)
    // Collectives queued before the failure finish (or the group aborts) within the deadline.
    if (nccl_ != nullptr && !nccl_->failed()) nccl_->Synchronize().IgnoreError();
#endif
    return forward;
  }
  // This rank's vocabulary slice of each row (the whole row at TP=1).
  const sharding::Range vocab = shard_->vocab;
  float* rows_out = gather_ ? local_logits_.as<float>() : host_logits_.as<float>();
  BF_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(rows_out, logits_.as<float>(),
                                          static_cast<uint64_t>(n_rows) * vocab.size() * sizeof(float),
                                          cudaMemcpyDeviceToHost, stream_),
                          "logits"));
#if defined(BITFLEET_HAVE_NCCL)
  // The step's queued collectives finish with it: waited for with the communicator's deadline
  // (a dead peer is an error, not a hang).
  if (nccl_ != nullptr) {
    BF_RETURN_IF_ERROR(nccl_->Synchronize());
  } else {
    BF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "step"));
  }
#else
  BF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "step"));
#endif
  if (gather_) {
    BF_RETURN_IF_ERROR(GatherLogitRows(*comm_, plan_, comm_->rank(), n_rows, local_logits_.as<float>(),
                                       gathered_.data(), config_.n_vocab, host_logits_.as<float>()));
  }
  return LogitRows(n_seqs);
}

StepLogits CudaModelRunnerImpl::LogitRows(int n_seqs) const {
  if (comm_->size() == 1 || gather_) {
    return StepLogits(host_logits_.as<float>(), logit_begin_.data(), n_seqs, static_cast<int>(config_.n_vocab));
  }
  return StepLogits(host_logits_.as<float>(), logit_begin_.data(), n_seqs, static_cast<int>(shard_->vocab.size()),
                    static_cast<int>(shard_->vocab.begin));
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
int CudaModelRunner::tp_rank() const { return impl_->comm_->rank(); }
int CudaModelRunner::tp_size() const { return impl_->comm_->size(); }
sharding::Communicator& CudaModelRunner::communicator() const { return *impl_->comm_; }
sharding::Range CudaModelRunner::vocab_slice() const { return impl_->shard_->vocab; }
bool CudaModelRunner::logits_whole() const { return impl_->comm_->size() == 1 || impl_->gather_; }
uint64_t CudaModelRunner::weight_stream_bytes_per_token() const {
  return impl_->weight_bytes_ + impl_->embedding_.row_bytes();
}
uint64_t CudaModelRunner::weight_resident_bytes() const { return impl_->weight_bytes_; }
uint64_t CudaModelRunner::weight_mapped_bytes() const { return impl_->embedding_.mapped_bytes(); }
std::string CudaModelRunner::kernel_variant() const { return impl_->device_label_; }
void CudaModelRunner::set_step_graphs(bool on) {
  impl_->step_graphs_ = on && (impl_->comm_->size() == 1 || impl_->device_collectives());
  if (!on) impl_->graphs_.clear();
}
bool CudaModelRunner::step_graphs() const { return impl_->step_graphs_; }
int64_t CudaModelRunner::step_graph_launches() const { return impl_->graph_launches_; }
void CudaModelRunner::set_fused_norms(bool on) {
  impl_->fused_norms_ = on;
  impl_->graphs_.clear();  // captured with the other kernels
  impl_->seen_keys_.clear();
}
bool CudaModelRunner::fused_norms() const { return impl_->fused_norms_; }
void CudaModelRunner::set_fused_rope_kv(bool on) {
  impl_->fused_rope_kv_ = on;
  impl_->graphs_.clear();  // captured with the other kernels
  impl_->seen_keys_.clear();
}
bool CudaModelRunner::fused_rope_kv() const { return impl_->fused_rope_kv_; }
int64_t CudaModelRunner::fused_rope_kv_launches() const { return impl_->fused_rope_kv_launches_; }
int64_t CudaModelRunner::fused_norm_launches() const { return impl_->fused_norm_launches_; }

}  // namespace bitfleet::worker

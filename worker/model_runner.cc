#include "worker/model_runner.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "cache/block_table.h"
#include "core/logging.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "worker/decoder_layers.h"
#include "worker/fault_injection.h"
#include "worker/model_weights.h"
#include "worker/step_context.h"

namespace bitfleet::worker {

class ModelRunnerImpl {
 public:
  static StatusOr<std::unique_ptr<ModelRunnerImpl>> Create(std::shared_ptr<const gguf::GgufFile> file,
                                                           const RunnerOptions& options);
  StatusOr<StepLogits> Step(std::span<const SequenceStep> batch);

  std::shared_ptr<const gguf::GgufFile> file_;
  model::ModelConfig config_;
  RunnerOptions options_;
  sharding::ShardPlan plan_;
  const sharding::RankShard* shard_ = nullptr;  // plan_'s entry for this rank
  ModelDims dims_;
  TokenEmbedding embedding_;
  std::vector<float> output_norm_;
  Projection lm_head_;
  std::unique_ptr<DecoderLayers> layers_;
  std::unique_ptr<cache::KvStorage> kv_;
  std::unique_ptr<ThreadPool> pool_;
  sharding::SingleRankCommunicator single_rank_;
  sharding::Communicator* comm_ = nullptr;
  StepScratch scratch_;
  FaultInjector faults_;
  // Whole-row logits under TP>1 (gather_logits): this rank's rows padded to the widest slice,
  // and every rank's padded rows as gathered.
  bool gather_ = false;
  std::vector<float> local_logits_;
  std::vector<float> gathered_;

  bool whole_rows() const { return comm_->size() == 1 || gather_; }

 private:
  // Final norm and LM head of the n_rows rows gathered in s.head_in; logits into s.logits.
  Status ComputeLogits(int n_rows);
};

Status ResolveRunnerOptions(const model::ModelConfig& config, RunnerOptions* o) {
  if (o->threads < 1 || o->threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be in [1, 1024], got ", o->threads));
  }
  if (o->max_step_tokens < 1 || o->max_step_sequences < 1 || o->max_logit_rows < 1) {
    return absl::InvalidArgumentError("max_step_tokens, max_step_sequences and max_logit_rows must be >= 1");
  }
  if (o->kv_block_size < 1 || o->kv_block_size > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("KV block size must be in [1, 4096], got ", o->kv_block_size));
  }
  if (o->max_context < 0 || o->kv_blocks < 0 || o->kv_cache_bytes < 0) {
    return absl::InvalidArgumentError("max_context, kv_blocks and kv_cache_bytes must be >= 0");
  }
  if (!(o->gpu_memory_utilization >= 0 && o->gpu_memory_utilization <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu_memory_utilization must be in [0, 1], got ", o->gpu_memory_utilization));
  }
  if (o->max_context == 0) o->max_context = config.n_ctx_train > 0 ? static_cast<int>(config.n_ctx_train) : 4096;
  if (o->kv_blocks == 0) o->kv_blocks = static_cast<int>(cache::BlocksForTokens(o->max_context, o->kv_block_size));
  return absl::OkStatus();
}

// The blocks of `kv` (its num_blocks ignored) that `budget` bytes hold, at most
// cache::kMaxKvPoolBlocks; INVALID_ARGUMENT when they hold less than one max_context sequence.
StatusOr<int> KvBlocksForBudget(cache::KvStorageOptions kv, int64_t budget, int max_context) {
  kv.num_blocks = 1;
  BF_ASSIGN_OR_RETURN(const uint64_t block_bytes, cache::KvStorage::BytesFor(kv));
  const uint64_t fits = static_cast<uint64_t>(budget) / block_bytes;
  const uint64_t context_blocks = static_cast<uint64_t>(cache::BlocksForTokens(max_context, kv.block_size));
  if (fits < context_blocks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a KV cache of %.1f MiB holds %d tokens (%s, %llu bytes per %d-token block on this rank), fewer than one "
        "%d-token context: raise --kv-cache-mib or lower --ctx",
        static_cast<double>(budget) / (1 << 20), static_cast<int>(fits * kv.block_size), cache::KvTypeName(kv.type),
        static_cast<unsigned long long>(block_bytes), kv.block_size, max_context));
  }
  return static_cast<int>(std::min(fits, cache::kMaxKvPoolBlocks));
}

Status CheckRunnerShapes(const model::ModelConfig& c) {
  if (c.n_embd == 0 || c.n_head == 0 || c.n_head_kv == 0 || c.head_dim == 0 || c.n_ff == 0 || c.n_vocab == 0 ||
      c.n_layer == 0) {
    return absl::InvalidArgumentError("model config has a zero dimension");
  }
  if (c.n_head % c.n_head_kv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_head ", c.n_head, " is not a multiple of n_head_kv ", c.n_head_kv));
  }
  const uint32_t rope_dim = c.rope_dim ? c.rope_dim : c.head_dim;
  if (rope_dim > c.head_dim || rope_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("rope dimension ", rope_dim, " invalid for head_dim ", c.head_dim));
  }
  return absl::OkStatus();
}


StatusOr<std::unique_ptr<ModelRunnerImpl>> ModelRunnerImpl::Create(std::shared_ptr<const gguf::GgufFile> file,
                                                                   const RunnerOptions& options) {
  auto impl = std::make_unique<ModelRunnerImpl>();
  impl->file_ = std::move(file);
  const gguf::GgufFile& f = *impl->file_;
  BF_ASSIGN_OR_RETURN(impl->config_, model::ReadModelConfig(f));
  const model::ModelConfig& c = impl->config_;
  BF_RETURN_IF_ERROR(model::ValidateTensors(c, f));
  BF_RETURN_IF_ERROR(CheckRunnerShapes(c));
  impl->options_ = options;
  BF_RETURN_IF_ERROR(ResolveRunnerOptions(c, &impl->options_));
  const RunnerOptions& o = impl->options_;
  impl->comm_ = o.communicator != nullptr ? o.communicator : &impl->single_rank_;
  const int rank = impl->comm_->rank();
  const int tp = impl->comm_->size();
  BF_ASSIGN_OR_RETURN(impl->plan_, sharding::ShardPlan::Create(c, f, tp));
  impl->shard_ = &impl->plan_.rank(rank);
  const sharding::RankShard& shard = *impl->shard_;
  BF_ASSIGN_OR_RETURN(impl->faults_, FaultInjector::FromEnv(rank));
  // This rank's shapes: its query heads, KV slots and FFN units; the *_full sizes stay whole.
  impl->dims_ = ModelDims::FromConfig(c);
  impl->dims_.n_head = static_cast<int>(shard.heads.size());
  impl->dims_.n_head_kv = static_cast<int>(shard.kv_heads.size());
  impl->dims_.n_ff = static_cast<int>(shard.ffn.size());

  cache::KvStorageOptions kv;
  kv.num_layers = static_cast<int>(c.n_layer);
  kv.n_kv_heads = impl->dims_.n_head_kv;
  kv.head_dim = impl->dims_.head_dim;
  kv.num_blocks = o.kv_blocks;
  kv.block_size = o.kv_block_size;
  kv.type = o.kv_type;
  if (options.kv_blocks == 0 && options.kv_cache_bytes > 0) {  // before loading: a budget too small fails fast
    BF_ASSIGN_OR_RETURN(kv.num_blocks, KvBlocksForBudget(kv, options.kv_cache_bytes, o.max_context));
    impl->options_.kv_blocks = kv.num_blocks;
  }

  namespace names = model::tensor_names;
  const uint64_t local_vocab = shard.vocab.size();
  BF_ASSIGN_OR_RETURN(impl->embedding_, TokenEmbedding::Load(f, *shard.Find(names::kTokenEmbd)));
  BF_ASSIGN_OR_RETURN(impl->output_norm_, LoadShardVector(f, shard, names::kOutputNorm, c.n_embd));
  // Tied embeddings: no output.weight, the LM head is the embedding matrix.
  const char* head_name = f.FindTensor(names::kOutput) != nullptr ? names::kOutput : names::kTokenEmbd;
  // The pool repacks the weights while they load (most of a load's time), then runs the steps.
  impl->pool_ = std::make_unique<ThreadPool>(o.threads);
  ThreadPool* pool = impl->pool_.get();
  BF_ASSIGN_OR_RETURN(impl->lm_head_, LoadShardProjection(f, shard, head_name, c.n_embd, local_vocab, pool));
  if (c.arch == model::Arch::kBitnet || c.has_sub_norms) {
    BF_ASSIGN_OR_RETURN(impl->layers_, LoadBitnetLayers(f, c, shard, impl->dims_, pool));
  } else {
    BF_ASSIGN_OR_RETURN(impl->layers_, LoadLlamaLayers(f, c, shard, impl->dims_, pool));
  }

  BF_ASSIGN_OR_RETURN(impl->kv_, cache::KvStorage::Create(kv));

  impl->gather_ = o.gather_logits && tp > 1;
  const int row_width = impl->whole_rows() ? static_cast<int>(c.n_vocab) : static_cast<int>(local_vocab);
  impl->scratch_.Allocate(impl->dims_, o, row_width, o.threads);
  if (impl->gather_) {
    const size_t padded = static_cast<size_t>(o.max_logit_rows) * impl->plan_.max_vocab_slice();
    impl->local_logits_.assign(padded, 0.0f);
    impl->gathered_.assign(padded * tp, 0.0f);
  }
  const double mib = 1048576.0;
  Logger("worker")->info("loaded {} ({}): {} layers, n_embd {}, vocab {}, weights {:.1f} MiB, "
                         "KV {} blocks x {} {} ({:.1f} MiB), {} threads, kernels {}",
                         c.name, c.arch_name, c.n_layer, c.n_embd, c.n_vocab,
                         (impl->layers_->resident_bytes() + impl->lm_head_.weight->bytes()) / mib, o.kv_blocks,
                         o.kv_block_size, cache::KvTypeName(o.kv_type), impl->kv_->bytes() / mib, o.threads,
                         kernels::CpuVariantName());
  if (tp > 1) {
    Logger("worker")->info(
        "rank {}/{} ({}): heads [{}, {}), {} KV heads ({}), FFN [{}, {}), vocab [{}, {}); resident weights "
        "{:.1f} MiB packed + {:.1f} MiB mapped embedding rows; file slices {:.1f} MiB split + {:.1f} MiB replicated",
        rank, tp, impl->comm_->backend(), shard.heads.begin, shard.heads.end, shard.kv_heads.size(),
        shard.kv_split ? "split" : "replicated", shard.ffn.begin, shard.ffn.end, shard.vocab.begin, shard.vocab.end,
        (impl->layers_->resident_bytes() + impl->lm_head_.weight->bytes()) / mib,
        impl->embedding_.mapped_bytes() / mib, shard.split_bytes() / mib, shard.replicated_bytes() / mib);
  }
  return impl;
}

Status GatherLogitRows(sharding::Communicator& comm, const sharding::ShardPlan& plan, int rank, int n_rows,
                       float* local, float* gathered, uint64_t n_vocab, float* out) {
  // Every rank sends its rows padded to the widest slice, then each rank's part is copied to its
  // vocabulary offset. Rows are padded back to front so the in-place move never overwrites a row
  // not yet moved.
  const size_t width = plan.max_vocab_slice();
  const size_t own = plan.rank(rank).vocab.size();
  for (int r = n_rows - 1; r >= 0; --r) {
    std::copy_backward(local + r * own, local + (r + 1) * own, local + r * width + own);
  }
  const size_t rank_floats = static_cast<size_t>(n_rows) * width;
  BF_RETURN_IF_ERROR(comm.AllGather(local, rank_floats * sizeof(float), gathered));
  for (int from = 0; from < plan.size(); ++from) {
    const sharding::Range vocab = plan.rank(from).vocab;
    for (int r = 0; r < n_rows; ++r) {
      const float* src = gathered + from * rank_floats + static_cast<size_t>(r) * width;
      std::copy_n(src, vocab.size(), out + r * n_vocab + vocab.begin);
    }
  }
  return absl::OkStatus();
}

Status ValidateStepBatch(std::span<const SequenceStep> batch, const RunnerOptions& o, int n_vocab, int* n_tokens,
                         int* n_rows) {
  if (batch.size() > static_cast<size_t>(o.max_step_sequences)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("step has ", batch.size(), " sequences, limit ", o.max_step_sequences));
  }
  int64_t tokens = 0;
  int64_t rows = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const SequenceStep& step = batch[i];
    const int64_t n = static_cast<int64_t>(step.tokens.size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " has no new tokens"));
    if (step.start_pos < 0 || step.start_pos + n > o.max_context) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": positions [", step.start_pos, ", ",
                                                     step.start_pos + n, ") outside the context of ", o.max_context));
    }
    const int64_t blocks = cache::BlocksForTokens(step.start_pos + n, o.kv_block_size);
    if (static_cast<int64_t>(step.block_table.size()) < blocks) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": block table has ", step.block_table.size(),
                                                     " blocks, ", blocks, " needed"));
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const int32_t id = step.block_table[b];
      if (id < 0 || id >= o.kv_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": KV block id ", id, " outside [0, ",
                                                       o.kv_blocks, ")"));
      }
    }
    for (int32_t token : step.tokens) {
      if (token < 0 || token >= n_vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", i, ": token id ", token, " outside the vocabulary of ", n_vocab));
      }
    }
    tokens += n;
    rows += step.all_logits ? n : 1;
  }
  if (tokens > o.max_step_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("step has ", tokens, " tokens, limit ", o.max_step_tokens));
  }
  if (rows > o.max_logit_rows) {
    return absl::ResourceExhaustedError(absl::StrCat("step asks for ", rows, " logit rows, limit ", o.max_logit_rows));
  }
  *n_tokens = static_cast<int>(tokens);
  *n_rows = static_cast<int>(rows);
  return absl::OkStatus();
}

StatusOr<StepLogits> ModelRunnerImpl::Step(std::span<const SequenceStep> batch) {
  int n_tokens = 0;
  int n_rows = 0;
  BF_RETURN_IF_ERROR(ValidateStepBatch(batch, options_, static_cast<int>(config_.n_vocab), &n_tokens, &n_rows));
  BF_RETURN_IF_ERROR(faults_.BeforeStep());
  StepScratch& s = scratch_;
  const int n_embd = dims_.n_embd;
  const int n_seqs = static_cast<int>(batch.size());
  const int row_width = whole_rows() ? static_cast<int>(config_.n_vocab) : static_cast<int>(shard_->vocab.size());
  const int row_begin = whole_rows() ? 0 : static_cast<int>(shard_->vocab.begin);
  if (n_seqs == 0) return StepLogits(s.logits.data(), s.logit_begin.data(), 0, row_width, row_begin);

  // Token layout: the sequences' new tokens back to back; logit rows likewise.
  int t = 0;
  int row = 0;
  for (int i = 0; i < n_seqs; ++i) {
    const SequenceStep& step = batch[i];
    const int n = static_cast<int>(step.tokens.size());
    s.seq_begin[i] = t;
    s.logit_begin[i] = row;
    for (int j = 0; j < n; ++j) {
      s.positions[t + j] = step.start_pos + j;
      BF_RETURN_IF_ERROR(embedding_.Lookup(step.tokens[j], s.x.data() + static_cast<size_t>(t + j) * n_embd));
      if (step.all_logits || j == n - 1) s.logit_src[row++] = t + j;
    }
    t += n;
  }
  s.seq_begin[n_seqs] = t;
  s.logit_begin[n_seqs] = row;
  // Vocab-parallel embedding: each token's row came from one rank, zeros from the others.
  if (comm_->size() > 1) BF_RETURN_IF_ERROR(comm_->AllReduceSum(s.x.data(), static_cast<size_t>(t) * n_embd));

  StepContext ctx{dims_, *pool_, *comm_, *kv_, s, batch, n_tokens};
  for (int layer = 0; layer < layers_->num_layers(); ++layer) BF_RETURN_IF_ERROR(layers_->Forward(layer, ctx));

  // Final norm and LM head on the rows that need logits only.
  for (int r = 0; r < n_rows; ++r) {
    std::copy_n(s.x.data() + static_cast<size_t>(s.logit_src[r]) * n_embd, n_embd,
                s.head_in.data() + static_cast<size_t>(r) * n_embd);
  }
  BF_RETURN_IF_ERROR(ComputeLogits(n_rows));
  return StepLogits(s.logits.data(), s.logit_begin.data(), n_seqs, row_width, row_begin);
}

Status ModelRunnerImpl::ComputeLogits(int n_rows) {
  StepScratch& s = scratch_;
  const int n_embd = dims_.n_embd;
  kernels::RmsNorm(s.head_in.data(), output_norm_.data(), n_rows, n_embd, dims_.rms_eps, s.head_in.data());
  const size_t local = lm_head_.rows();
  float* out = gather_ ? local_logits_.data() : s.logits.data();
  kernels::MatMul(*lm_head_.weight, s.head_in.data(), n_rows, out, *pool_, &s.qa_row);
  if (lm_head_.has_scale) {
    const size_t n = static_cast<size_t>(n_rows) * local;
    for (size_t i = 0; i < n; ++i) out[i] *= lm_head_.scale;
  }
  if (!gather_) return absl::OkStatus();
  return GatherLogitRows(*comm_, plan_, comm_->rank(), n_rows, out, gathered_.data(), config_.n_vocab,
                         s.logits.data());
}

// ---- ModelRunner: thin forwarding shell over the implementation. ----

StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(std::shared_ptr<const gguf::GgufFile> file,
                                                           const RunnerOptions& options) {
  if (!file) return absl::InvalidArgumentError("no model file");
  BF_ASSIGN_OR_RETURN(std::unique_ptr<ModelRunnerImpl> impl, ModelRunnerImpl::Create(std::move(file), options));
  return std::unique_ptr<ModelRunner>(new ModelRunner(std::move(impl)));
}

ModelRunner::ModelRunner(std::unique_ptr<ModelRunnerImpl> impl) : impl_(std::move(impl)) {}
ModelRunner::~ModelRunner() = default;

StatusOr<StepLogits> ModelRunner::Step(std::span<const SequenceStep> batch) { return impl_->Step(batch); }
const model::ModelConfig& ModelRunner::config() const { return impl_->config_; }
const RunnerOptions& ModelRunner::options() const { return impl_->options_; }
int ModelRunner::n_vocab() const { return static_cast<int>(impl_->config_.n_vocab); }
int ModelRunner::kv_block_size() const { return impl_->options_.kv_block_size; }
int ModelRunner::kv_blocks() const { return impl_->options_.kv_blocks; }
const cache::KvStorage& ModelRunner::kv_storage() const { return *impl_->kv_; }
std::string ModelRunner::kernel_variant() const { return kernels::CpuVariantName(); }

uint64_t ModelRunner::weight_stream_bytes_per_token() const {
  return impl_->layers_->stream_bytes() + impl_->lm_head_.weight->stream_bytes() + impl_->embedding_.row_bytes();
}

uint64_t ModelRunner::weight_resident_bytes() const {
  return impl_->layers_->resident_bytes() + impl_->lm_head_.weight->bytes();
}

uint64_t ModelRunner::weight_mapped_bytes() const { return impl_->embedding_.mapped_bytes(); }
int ModelRunner::tp_rank() const { return impl_->comm_->rank(); }
int ModelRunner::tp_size() const { return impl_->comm_->size(); }
const sharding::RankShard& ModelRunner::shard() const { return *impl_->shard_; }
sharding::Communicator& ModelRunner::communicator() const { return *impl_->comm_; }
sharding::Range ModelRunner::vocab_slice() const { return impl_->shard_->vocab; }
bool ModelRunner::logits_whole() const { return impl_->whole_rows(); }

}  // namespace bitfleet::worker

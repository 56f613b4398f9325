#include "sharding/shard_plan.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace bitfleet::sharding {
namespace {

namespace names = model::tensor_names;

// Upper bound on the TP degree (keeps every per-rank loop and buffer trivially small).
constexpr int kMaxTpSize = 4096;

// The rows of `slots` KV heads of `head_dim` rows each, merging runs of consecutive heads.
std::vector<Range> HeadRows(const std::vector<uint32_t>& heads, uint64_t head_dim) {
  std::vector<Range> rows;
  for (uint32_t h : heads) {
    const Range r{h * head_dim, (h + 1) * head_dim};
    if (!rows.empty() && rows.back().end == r.begin) {
      rows.back().end = r.end;
    } else {
      rows.push_back(r);
    }
  }
  return rows;
}

// The KV heads rank `rank` holds, one per local KV slot (see the header for the rules).
std::vector<uint32_t> KvSlots(const model::ModelConfig& c, int tp, int rank, bool* split) {
  const uint32_t heads = c.n_head / tp;
  const uint32_t first = rank * heads;
  std::vector<uint32_t> slots;
  if (c.n_head_kv % tp == 0) {
    *split = true;
    const uint32_t per_rank = c.n_head_kv / tp;
    for (uint32_t k = 0; k < per_rank; ++k) slots.push_back(rank * per_rank + k);
    return slots;
  }
  *split = false;
  const uint32_t group = c.n_head / c.n_head_kv;  // query heads per KV head
  const uint32_t lo = first / group;
  const uint32_t hi = (first + heads - 1) / group;
  const uint32_t distinct = hi - lo + 1;
  bool uniform = heads % distinct == 0;
  for (uint32_t i = 0; uniform && i < heads; ++i) uniform = (first + i) / group - lo == i / (heads / distinct);
  if (uniform) {
    for (uint32_t k = lo; k <= hi; ++k) slots.push_back(k);
  } else {
    for (uint32_t i = 0; i < heads; ++i) slots.push_back((first + i) / group);
  }
  return slots;
}

class RankBuilder {
 public:
  RankBuilder(const gguf::GgufFile& file, RankShard* shard) : file_(file), shard_(shard) {}

  // Adds `name` (when the file has it) with the given rows and columns; empty ranges mean all.
  void Add(const std::string& name, TensorRole role, std::vector<Range> rows = {}, Range cols = {}) {
    const gguf::TensorInfo* info = file_.FindTensor(name);
    if (info == nullptr) return;
    TensorSlice s;
    s.name = name;
    s.type = info->type;
    s.role = role;
    s.cols = info->shape.empty() ? 0 : info->shape[0];
    s.rows = info->shape.size() < 2 ? 1 : info->rows();
    s.row_ranges = rows.empty() ? std::vector<Range>{{0, s.rows}} : std::move(rows);
    s.col_range = cols.size() == 0 ? Range{0, s.cols} : cols;
    shard_->tensors.push_back(std::move(s));
  }

 private:
  const gguf::GgufFile& file_;
  RankShard* shard_;
};

uint64_t BlockElems(const gguf::GgufFile& file, const std::string& name) {
  const gguf::TensorInfo* info = file.FindTensor(name);
  return info == nullptr ? 1 : Info(info->type).block_elems;
}

Status CheckConfig(const model::ModelConfig& c, const gguf::GgufFile& file, int tp, uint64_t ffn_granule) {
  if (tp < 1 || tp > kMaxTpSize) {
    return absl::InvalidArgumentError(absl::StrCat("tensor-parallel size must be in [1, ", kMaxTpSize, "], got ", tp));
  }
  if (c.n_head == 0 || c.n_head_kv == 0 || c.head_dim == 0 || c.n_ff == 0 || c.n_vocab == 0 ||
      c.n_head % c.n_head_kv != 0) {
    return absl::InvalidArgumentError("model config has a zero dimension or n_head not a multiple of n_head_kv");
  }
  if (c.n_head % tp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split ", names::Layer(0, names::kAttnQ), ": its ", c.n_head,
                                                   " query heads do not divide evenly between ", tp, " ranks"));
  }
  if (c.n_vocab < static_cast<uint32_t>(tp)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split ", names::kTokenEmbd, ": ", c.n_vocab,
                                                   " vocabulary rows for ", tp, " ranks"));
  }
  if (c.n_ff % ffn_granule != 0 || c.n_ff / ffn_granule < static_cast<uint64_t>(tp)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot split ", names::Layer(0, names::kFfnDown), ": its ", c.n_ff, " input columns hold ",
        c.n_ff / ffn_granule, " whole ", ffn_granule, "-element blocks, fewer than the ", tp,
        " ranks (a K-split must fall on block boundaries)"));
  }
  const uint64_t local_q = static_cast<uint64_t>(c.n_head / tp) * c.head_dim;
  for (uint32_t layer = 0; layer < c.n_layer; ++layer) {
    const std::string name = names::Layer(layer, names::kAttnOutput);
    const gguf::TensorInfo* info = file.FindTensor(name);
    if (info == nullptr) continue;
    const uint64_t block = Info(info->type).block_elems;
    if (local_q % block != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot split ", name, " (", DTypeName(info->type), ") between ", tp, " ranks: each rank's ",
          local_q, " input columns (", c.n_head / tp, " heads x ", c.head_dim,
          ") are not whole ", block, "-element blocks (a K-split must fall on block boundaries)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* TensorRoleName(TensorRole role) {
  switch (role) {
    case TensorRole::kReplicated:
      return "replicated";
    case TensorRole::kColumnParallel:
      return "column-parallel";
    case TensorRole::kRowParallel:
      return "row-parallel";
    case TensorRole::kVocabParallel:
      return "vocab-parallel";
    case TensorRole::kSlicedVector:
      return "sliced";
  }
  return "?";
}

uint64_t TensorSlice::local_rows() const {
  uint64_t n = 0;
  for (const Range& r : row_ranges) n += r.size();
  return n;
}

uint64_t TensorSlice::file_bytes() const {
  const uint64_t elems = local_rows() * local_cols();
  StatusOr<uint64_t> bytes = TensorBytes(type, local_cols(), elems);
  return bytes.ok() ? *bytes : 0;
}

const TensorSlice* RankShard::Find(std::string_view name) const {
  for (const TensorSlice& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

uint64_t RankShard::split_bytes() const {
  uint64_t total = 0;
  for (const TensorSlice& t : tensors) total += t.role == TensorRole::kReplicated ? 0 : t.file_bytes();
  return total;
}

uint64_t RankShard::replicated_bytes() const {
  uint64_t total = 0;
  for (const TensorSlice& t : tensors) total += t.role == TensorRole::kReplicated ? t.file_bytes() : 0;
  return total;
}

Range BalancedRange(uint64_t n, uint64_t granule, int parts, int r) {
  const uint64_t units = n / granule;
  return Range{units * r / parts * granule, units * (r + 1) / parts * granule};
}

uint64_t ShardPlan::max_vocab_slice() const {
  uint64_t widest = 0;
  for (const RankShard& r : ranks_) widest = std::max(widest, r.vocab.size());
  return widest;
}

StatusOr<ShardPlan> ShardPlan::Create(const model::ModelConfig& c, const gguf::GgufFile& file, int tp) {
  ShardPlan plan;
  for (uint32_t layer = 0; layer < c.n_layer; ++layer) {
    plan.ffn_granule_ = std::lcm(plan.ffn_granule_, BlockElems(file, names::Layer(layer, names::kFfnDown)));
  }
  BF_RETURN_IF_ERROR(CheckConfig(c, file, tp, plan.ffn_granule_));

  const uint64_t head_dim = c.head_dim;
  const uint32_t heads = c.n_head / tp;
  const bool sub_norms = c.arch == model::Arch::kBitnet || c.has_sub_norms;
  for (int r = 0; r < tp; ++r) {
    RankShard shard;
    shard.rank = r;
    shard.size = tp;
    shard.heads = Range{static_cast<uint64_t>(r) * heads, static_cast<uint64_t>(r + 1) * heads};
    shard.kv_heads = KvSlots(c, tp, r, &shard.kv_split);
    shard.ffn = BalancedRange(c.n_ff, plan.ffn_granule_, tp, r);
    shard.vocab = BalancedRange(c.n_vocab, 1, tp, r);
    const Range q_rows{shard.heads.begin * head_dim, shard.heads.end * head_dim};
    const std::vector<Range> kv_rows = HeadRows(shard.kv_heads, head_dim);

    RankBuilder b(file, &shard);
    b.Add(names::kTokenEmbd, TensorRole::kVocabParallel, {shard.vocab});
    for (uint32_t layer = 0; layer < c.n_layer; ++layer) {
      auto name = [layer](const char* suffix) { return names::Layer(layer, suffix); };
      b.Add(name(names::kAttnNorm), TensorRole::kReplicated);
      b.Add(name(names::kAttnQ), TensorRole::kColumnParallel, {q_rows});
      b.Add(name(names::kAttnK), TensorRole::kColumnParallel, kv_rows);
      b.Add(name(names::kAttnV), TensorRole::kColumnParallel, kv_rows);
      b.Add(name(names::kAttnOutput), TensorRole::kRowParallel, {}, q_rows);
      b.Add(name(names::kFfnNorm), TensorRole::kReplicated);
      b.Add(name(names::kFfnGate), TensorRole::kColumnParallel, {shard.ffn});
      b.Add(name(names::kFfnUp), TensorRole::kColumnParallel, {shard.ffn});
      b.Add(name(names::kFfnDown), TensorRole::kRowParallel, {}, shard.ffn);
      if (sub_norms) {
        b.Add(name(names::kAttnSubNorm), TensorRole::kSlicedVector, {}, q_rows);
        b.Add(name(names::kFfnSubNorm), TensorRole::kSlicedVector, {}, shard.ffn);
      }
      for (const std::string& suffix : names::ProjectionSuffixes()) {
        b.Add(name(names::ScaleOf(suffix).c_str()), TensorRole::kReplicated);
      }
    }
    b.Add(names::kOutputNorm, TensorRole::kReplicated);
    b.Add(names::kOutput, TensorRole::kVocabParallel, {shard.vocab});
    // One rank holds everything: nothing is really split.
    if (tp == 1) {
      for (TensorSlice& t : shard.tensors) t.role = TensorRole::kReplicated;
    }
    plan.ranks_.push_back(std::move(shard));
  }
  return plan;
}

}  // namespace bitfleet::sharding

#include "worker/distributed_sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace bitfleet::worker {
namespace {

// Per row and rank in a candidate round: the header, then `send` candidates (value, id).
struct RowHeader {
  float max;         // this rank's highest penalized logit (-inf for an empty slice)
  int32_t n_sent;    // real candidates that follow (the rest of the `send` slots is padding)
  int32_t has_more;  // 1 when the rank holds tokens it did not send
  int32_t local_size;
  double mass;       // softmax mass of the whole slice relative to `max` (see Resolve)
};
constexpr size_t kHeaderBytes = sizeof(RowHeader);
constexpr size_t kCandidateBytes = 8;  // float value, int32 id
constexpr int64_t kFirstPrefixRound = 64;

}  // namespace

DistributedSampler::DistributedSampler(sharding::Communicator& comm, int32_t n_vocab, int32_t vocab_begin,
                                       int32_t vocab_size)
    : comm_(comm),
      n_vocab_(std::max<int32_t>(1, n_vocab)),
      vocab_begin_(vocab_begin),
      vocab_size_(std::max<int32_t>(0, vocab_size)),
      counts_(vocab_size_, 0),
      order_(vocab_size_) {
  touched_.reserve(vocab_size_);
}

void DistributedSampler::Penalize(size_t i, const ShardedLogitsRow& row) {
  float* work = penalized_.data() + i * static_cast<size_t>(vocab_size_);
  std::copy(row.logits.begin(), row.logits.end(), work);
  const SamplingParams& p = *row.params;
  // Same arithmetic as Sampler::ApplyPenalties, on the tokens of this slice: biases, mask, penalties.
  ApplyBiasAndMask(std::span<float>(work, static_cast<size_t>(vocab_size_)), vocab_begin_, p);
  const bool any_penalty = p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (!any_penalty || p.penalty_last_n == 0 || row.history.empty()) return;
  size_t window = row.history.size();
  if (p.penalty_last_n > 0) window = std::min(window, static_cast<size_t>(p.penalty_last_n));
  for (int32_t token : row.history.subspan(row.history.size() - window)) {
    const int64_t local = static_cast<int64_t>(token) - vocab_begin_;
    if (local < 0 || local >= vocab_size_) continue;
    if (counts_[local]++ == 0) touched_.push_back(static_cast<int32_t>(local));
  }
  for (int32_t local : touched_) {
    work[local] = PenalizedLogit(work[local], counts_[local], p);
    counts_[local] = 0;
  }
  touched_.clear();
}

void DistributedSampler::LocalBest(size_t i, int64_t count) {
  const float* w = Penalized(i);
  // Strict total order (higher logit, then lower id), as Sampler's.
  auto better = [w](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
  const size_t n = static_cast<size_t>(std::min<int64_t>(count, vocab_size_));
  std::iota(order_.begin(), order_.end(), 0);
  std::partial_sort(order_.begin(), order_.begin() + n, order_.end(), better);
  local_.resize(n);
  for (size_t j = 0; j < n; ++j) local_[j] = Candidate{w[order_[j]], vocab_begin_ + order_[j]};
}

int32_t DistributedSampler::DrawFromPrefix(size_t n, const SamplingParams& params, Rng& rng) {
  // Sampler::Filter's tempered distribution and Sampler::Sample's draw, on merged_[0, n).
  const float max_logit = merged_[0].value;
  const float inv_temp = 1.0f / params.temperature;
  probs_.resize(n);
  double sum = 0.0;
  for (size_t j = 0; j < n; ++j) {
    probs_[j] = std::exp((merged_[j].value - max_logit) * inv_temp);
    sum += probs_[j];
  }
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (size_t j = 0; j < n; ++j) probs_[j] *= inv_sum;
  const double u = rng.Uniform();
  double cumulative = 0.0;
  for (size_t j = 0; j < n; ++j) {
    cumulative += probs_[j];
    if (u < cumulative) return merged_[j].id;
  }
  // As Sampler: rounding left u above the total, the last candidate with any probability.
  size_t last = n - 1;
  while (last > 0 && !(probs_[last] > 0.0f)) --last;
  return merged_[last].id;
}

void DistributedSampler::Resolve(size_t i, const ShardedLogitsRow& row, RowState& state, size_t row_offset,
                                 size_t record_bytes) {
  const SamplingParams& params = *row.params;
  const int ranks = comm_.size();
  auto header = [&](int r) {
    RowHeader h;
    std::memcpy(&h, recv_.data() + r * record_bytes + row_offset, kHeaderBytes);
    return h;
  };
  auto better = [](const Candidate& a, const Candidate& b) {
    return a.value > b.value || (a.value == b.value && a.id < b.id);
  };

  if (state.mode == Mode::kFull) {
    // Sampler walks the whole vocabulary in id order: find the rank whose share of the
    // cumulative distribution holds the draw; that rank walks its slice (ranks hold ascending,
    // contiguous slices, so rank order is id order).
    float gmax = -INFINITY;
    for (int r = 0; r < ranks; ++r) gmax = std::max(gmax, header(r).max);
    const float inv_temp = 1.0f / params.temperature;
    std::vector<double>& mass = mass_scratch_;
    mass.assign(ranks, 0.0);
    double total = 0.0;
    for (int r = 0; r < ranks; ++r) {
      const RowHeader h = header(r);
      if (h.local_size > 0) mass[r] = h.mass * std::exp(static_cast<double>((h.max - gmax) * inv_temp));
      total += mass[r];
    }
    const float inv_sum = static_cast<float>(1.0 / total);
    const double u = row.rng->Uniform();
    int owner = -1;
    double before = 0.0;
    for (int r = 0; r < ranks; ++r) {
      if (!(mass[r] > 0.0)) continue;  // an empty slice, or one whose tokens are all masked
      const double next = before + mass[r] * inv_sum;
      owner = r;
      if (u < next) break;
      before = next;
    }
    state.await_owner = true;
    state.token = -1;
    if (owner != comm_.rank()) return;
    const float* w = Penalized(i);
    double cumulative = before;
    // Rounding left u above the total: the last token with any probability, else (every one
    // underflowed) the slice's best, which has a finite logit since its mass is not 0.
    int32_t fallback = -1;
    int32_t best = 0;
    for (int32_t j = 0; j < vocab_size_; ++j) {
      if (w[j] > w[best]) best = j;
      const float p = static_cast<float>(std::exp((w[j] - gmax) * inv_temp)) * inv_sum;
      if (p > 0.0f) fallback = j;
      cumulative += p;
      if (u < cumulative) {
        state.token = vocab_begin_ + j;
        return;
      }
    }
    state.token = vocab_begin_ + (fallback >= 0 ? fallback : best);
    return;
  }

  // Merge every rank's candidates, best first. `exact`: how many leading entries are certainly
  // the global best (no unsent token of a rank that has more can outrank them).
  merged_.clear();
  const Candidate* frontier = nullptr;
  Candidate frontier_value{};
  for (int r = 0; r < ranks; ++r) {
    const RowHeader h = header(r);
    const uint8_t* p = recv_.data() + r * record_bytes + row_offset + kHeaderBytes;
    for (int32_t j = 0; j < h.n_sent; ++j) {
      Candidate c;
      std::memcpy(&c.value, p + j * kCandidateBytes, sizeof(float));
      std::memcpy(&c.id, p + j * kCandidateBytes + sizeof(float), sizeof(int32_t));
      merged_.push_back(c);
    }
    if (h.has_more && h.n_sent > 0) {
      const Candidate last = merged_.back();
      if (frontier == nullptr || better(last, frontier_value)) {
        frontier_value = last;
        frontier = &frontier_value;
      }
    }
  }
  std::sort(merged_.begin(), merged_.end(), better);
  if (merged_.empty()) {  // an empty vocabulary cannot happen with a valid plan; stay defined
    state.token = 0;
    state.done = true;
    return;
  }

  if (state.mode == Mode::kGreedy) {
    state.token = merged_[0].id;
    state.done = true;
    return;
  }

  size_t available = merged_.size();
  size_t exact = available;
  if (state.mode == Mode::kTopK) {
    available = exact = std::min<size_t>(available, static_cast<size_t>(params.top_k));
  } else if (frontier != nullptr) {
    exact = static_cast<size_t>(std::find_if(merged_.begin(), merged_.end(),
                                             [&](const Candidate& c) { return c.id == frontier_value.id; }) -
                                merged_.begin()) + 1;
  }
  const bool complete = frontier == nullptr || state.mode == Mode::kTopK;

  // top-p / min-p as Sampler::Filter: untempered probabilities relative to the top logit; the
  // top-p normaliser is the mass of the top-k survivors, or (no top-k) of the whole vocabulary.
  const float max_logit = merged_[0].value;
  double sum = 0.0;
  if (params.top_p < 1.0f) {
    if (state.mode == Mode::kTopK) {
      for (size_t j = 0; j < available; ++j) sum += std::exp(merged_[j].value - max_logit);
    } else {
      for (int r = 0; r < ranks; ++r) {
        const RowHeader h = header(r);
        if (h.local_size > 0) sum += h.mass * std::exp(static_cast<double>(h.max - max_logit));
      }
    }
  }
  size_t n = 0;
  if (params.top_p < 1.0f || params.min_p > 0.0f) {
    const float threshold = params.min_p * 1.0f;  // min_p × the top probability, exp(0)
    double cumulative = 0.0;
    for (size_t j = 0; j < exact && n == 0; ++j) {
      const float p = std::exp(merged_[j].value - max_logit);
      if (params.min_p > 0.0f && j >= 1 && p < threshold) n = j;
      if (n == 0 && params.top_p < 1.0f) {
        cumulative += p / sum;
        if (cumulative >= params.top_p) n = j + 1;
      }
    }
    if (n == 0 && !complete) {
      // The cut lies beyond what is known exactly: ask for more candidates next round.
      state.send = std::min<int64_t>(state.send * 4, n_vocab_);
      return;
    }
    if (n == 0) n = exact;
  } else {
    n = available;  // top-k alone
  }
  state.token = DrawFromPrefix(n, params, *row.rng);
  state.done = true;
}

Status DistributedSampler::SampleBatch(std::span<const ShardedLogitsRow> rows, std::span<int32_t> tokens) {
  if (tokens.size() < rows.size()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling ", rows.size(), " rows into ", tokens.size(), " tokens"));
  }
  const size_t n_rows = rows.size();
  penalized_.resize(n_rows * static_cast<size_t>(vocab_size_));
  states_.assign(n_rows, RowState{});
  for (size_t i = 0; i < n_rows; ++i) {
    const ShardedLogitsRow& row = rows[i];
    if (row.params == nullptr || row.rng == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("row ", i, " has no sampling params or RNG"));
    }
    if (row.logits.size() != static_cast<size_t>(vocab_size_)) {
      return absl::InvalidArgumentError(absl::StrCat("row ", i, " has ", row.logits.size(),
                                                     " logits; this rank's vocabulary slice holds ", vocab_size_));
    }
    Penalize(i, row);
    const SamplingParams& p = *row.params;
    RowState& s = states_[i];
    if (p.greedy()) {
      s.mode = Mode::kGreedy;
      s.send = 1;
    } else if (p.top_k > 0 && p.top_k < n_vocab_) {
      s.mode = Mode::kTopK;
      s.send = p.top_k;
    } else if (p.top_p < 1.0f || p.min_p > 0.0f) {
      s.mode = Mode::kPrefix;
      s.send = std::min<int64_t>(kFirstPrefixRound, n_vocab_);
    } else {
      s.mode = Mode::kFull;
      s.send = 0;
    }
  }

  // Candidate rounds: every unresolved row sends its header and `send` candidates per rank.
  std::vector<size_t>& offsets = offsets_;
  for (;;) {
    offsets.assign(n_rows, 0);
    size_t record_bytes = 0;
    bool any = false;
    for (size_t i = 0; i < n_rows; ++i) {
      const RowState& s = states_[i];
      if (s.done || s.await_owner) continue;
      any = true;
      offsets[i] = record_bytes;
      record_bytes += kHeaderBytes + static_cast<size_t>(s.send) * kCandidateBytes;
    }
    if (!any) break;
    send_.assign(record_bytes, 0);
    for (size_t i = 0; i < n_rows; ++i) {
      const RowState& s = states_[i];
      if (s.done || s.await_owner) continue;
      const float* w = Penalized(i);
      RowHeader h{-INFINITY, 0, 0, vocab_size_, 0.0};
      for (int32_t j = 0; j < vocab_size_; ++j) h.max = std::max(h.max, w[j]);
      const SamplingParams& p = *rows[i].params;
      // A slice whose tokens are all masked (-inf) has no mass (exp(-inf - -inf) would be NaN).
      if (vocab_size_ > 0 && h.max > -INFINITY &&
          (s.mode == Mode::kFull || (s.mode == Mode::kPrefix && p.top_p < 1.0f))) {
        // Softmax mass of the slice relative to its own max (tempered for kFull), rescaled to
        // the global max by the receivers.
        const float inv_temp = s.mode == Mode::kFull ? 1.0f / p.temperature : 1.0f;
        for (int32_t j = 0; j < vocab_size_; ++j) h.mass += std::exp((w[j] - h.max) * inv_temp);
      }
      if (s.send > 0) {
        LocalBest(i, s.send);
        h.n_sent = static_cast<int32_t>(local_.size());
        h.has_more = h.n_sent < vocab_size_ ? 1 : 0;
        uint8_t* out = send_.data() + offsets[i] + kHeaderBytes;
        for (size_t j = 0; j < local_.size(); ++j) {
          std::memcpy(out + j * kCandidateBytes, &local_[j].value, sizeof(float));
          std::memcpy(out + j * kCandidateBytes + sizeof(float), &local_[j].id, sizeof(int32_t));
        }
      } else {
        h.has_more = vocab_size_ > 0 ? 1 : 0;
      }
      std::memcpy(send_.data() + offsets[i], &h, kHeaderBytes);
    }
    recv_.resize(record_bytes * comm_.size());
    BF_RETURN_IF_ERROR(comm_.AllGather(send_.data(), record_bytes, recv_.data()));
    for (size_t i = 0; i < n_rows; ++i) {
      RowState& s = states_[i];
      if (s.done || s.await_owner) continue;
      Resolve(i, rows[i], s, offsets[i], record_bytes);
    }
  }

  // Temperature-only rows: the owning rank of each draw shares its token.
  owner_send_.clear();
  for (const RowState& s : states_) {
    if (s.await_owner) owner_send_.push_back(s.token);
  }
  if (!owner_send_.empty()) {
    const size_t bytes = owner_send_.size() * sizeof(int32_t);
    owner_recv_.resize(owner_send_.size() * comm_.size());
    BF_RETURN_IF_ERROR(comm_.AllGather(owner_send_.data(), bytes, owner_recv_.data()));
    size_t k = 0;
    for (RowState& s : states_) {
      if (!s.await_owner) continue;
      for (int r = 0; r < comm_.size(); ++r) {
        const int32_t t = owner_recv_[r * owner_send_.size() + k];
        if (t >= 0) s.token = t;
      }
      ++k;
      s.done = true;
    }
  }
  for (size_t i = 0; i < n_rows; ++i) tokens[i] = states_[i].token;
  return absl::OkStatus();
}

StatusOr<int32_t> DistributedSampler::Sample(std::span<const float> logits, std::span<const int32_t> history,
                                             const SamplingParams& params, Rng& rng) {
  const ShardedLogitsRow row{logits, history, &params, &rng};
  int32_t token = -1;
  BF_RETURN_IF_ERROR(SampleBatch(std::span<const ShardedLogitsRow>(&row, 1), std::span<int32_t>(&token, 1)));
  return token;
}

}  // namespace bitfleet::worker

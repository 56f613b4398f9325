#include "worker/token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"

namespace bitfleet::worker {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kSumBlock = 1024;

// a ranks before b: the higher logit, ties to the lower id.
bool Better(const TopLogprob& a, const TopLogprob& b) {
  return a.logprob > b.logprob || (a.logprob == b.logprob && a.token < b.token);
}

// Keeps `top` the best `n` of the candidates offered so far, best first.
void Offer(std::vector<TopLogprob>& top, int n, TopLogprob candidate) {
  if (n == 0) return;
  if (static_cast<int>(top.size()) == n && !Better(candidate, top.back())) return;
  const auto at = std::upper_bound(top.begin(), top.end(), candidate, Better);
  top.insert(at, candidate);
  if (static_cast<int>(top.size()) > n) top.pop_back();
}

// One row's slice as floats for the all-gather: max, sum_exp, has_token, token_logit, then
// kMaxTopLogprobs (id, logit) pairs, unused ones with id -1. Ids below 2^24 are exact in a float.
constexpr size_t kSliceFloats = 4 + 2 * kMaxTopLogprobs;

void Encode(const LogprobSlice& slice, float* out) {
  out[0] = slice.max;
  out[1] = static_cast<float>(slice.sum_exp);
  out[2] = slice.has_token ? 1.0f : 0.0f;
  out[3] = slice.token_logit;
  for (int k = 0; k < kMaxTopLogprobs; ++k) {
    const bool used = k < static_cast<int>(slice.top.size());
    out[4 + 2 * k] = used ? static_cast<float>(slice.top[k].token) : -1.0f;
    out[5 + 2 * k] = used ? slice.top[k].logprob : 0.0f;
  }
}

LogprobSlice Decode(const float* in) {
  LogprobSlice slice;
  slice.max = in[0];
  slice.sum_exp = in[1];
  slice.has_token = in[2] != 0.0f;
  slice.token_logit = in[3];
  for (int k = 0; k < kMaxTopLogprobs && in[4 + 2 * k] >= 0.0f; ++k) {
    slice.top.push_back({static_cast<int32_t>(in[4 + 2 * k]), in[5 + 2 * k]});
  }
  return slice;
}

// fn over rows [0, n): on `pool`, one row at a time to whichever thread is free, when there is
// a pool and more than one row; else on this thread.
void ForEachRow(ThreadPool* pool, size_t n, FunctionRef<void(int64_t, int64_t)> fn) {
  if (pool != nullptr && n > 1) {
    pool->ParallelForDynamic(static_cast<int64_t>(n), 1, fn);
  } else {
    fn(0, static_cast<int64_t>(n));
  }
}

}  // namespace

LogprobSlice SummarizeSlice(std::span<const float> logits, int32_t vocab_begin, int32_t token, int top_n) {
  LogprobSlice slice;
  const int64_t n = static_cast<int64_t>(logits.size());
  // The largest logit, NaNs skipped (ArgMax's rule); -inf when there is none.
  slice.max = kNegInf;
  if (n > 0) slice.max = std::max(kNegInf, logits[kernels::ArgMax(logits.data(), n)]);
  if (slice.max != kNegInf) {
    // The vector exp of the softmax kernels, on a copy; float lanes within a block of
    // kSumBlock, the blocks added in double (a whole row in float lanes would drift by ~1e-5 on
    // a 49k vocabulary). A NaN logit makes the sum NaN.
    thread_local std::vector<float> scratch;
    scratch.assign(logits.begin(), logits.end());
    double sum = 0.0;
    for (int64_t b = 0; b < n; b += kSumBlock) {
      sum += kernels::ExpShiftSum(scratch.data() + b, std::min<int64_t>(kSumBlock, n - b), slice.max);
    }
    slice.sum_exp = sum;
  } else {
    // Only -inf and NaN (or nothing): the -infs add nothing, a NaN poisons the row.
    for (float l : logits) {
      if (std::isnan(l)) slice.sum_exp = std::numeric_limits<double>::quiet_NaN();
    }
  }
  const int64_t local = static_cast<int64_t>(token) - vocab_begin;
  if (local >= 0 && local < static_cast<int64_t>(logits.size())) {
    slice.has_token = true;
    slice.token_logit = logits[local];
  }
  if (top_n == 0) return slice;
  slice.top.reserve(top_n + 1);
  // Ids rise along the scan, so once `top` is full only a strictly larger logit can enter it:
  // one compare per logit (NaNs and -inf never enter).
  float threshold = kNegInf;
  for (int64_t j = 0; j < n; ++j) {
    if (!(logits[j] > threshold)) continue;
    Offer(slice.top, top_n, {vocab_begin + static_cast<int32_t>(j), logits[j]});
    if (static_cast<int>(slice.top.size()) == top_n) threshold = slice.top.back().logprob;
  }
  return slice;
}

TokenLogprobs MergeSlices(std::span<const LogprobSlice> slices, int top_n) {
  double max = -std::numeric_limits<double>::infinity();
  for (const LogprobSlice& s : slices) max = std::max(max, static_cast<double>(s.max));
  double sum = 0.0;
  for (const LogprobSlice& s : slices) {
    if (std::isnan(s.sum_exp)) sum = s.sum_exp;
    if (s.sum_exp > 0.0) sum += s.sum_exp * std::exp(static_cast<double>(s.max) - max);
  }
  const double log_z = max + std::log(sum);  // log of the softmax denominator
  TokenLogprobs out;
  out.logprob = std::numeric_limits<float>::quiet_NaN();
  std::vector<TopLogprob> top;
  for (const LogprobSlice& s : slices) {
    if (s.has_token) out.logprob = static_cast<float>(s.token_logit - log_z);
    for (const TopLogprob& t : s.top) Offer(top, top_n, t);
  }
  for (TopLogprob& t : top) t.logprob = static_cast<float>(t.logprob - log_z);
  out.top = std::move(top);
  return out;
}

TokenLogprobs ComputeLogprobs(std::span<const float> logits, int32_t token, int top_n) {
  const LogprobSlice slice = SummarizeSlice(logits, 0, token, top_n);
  return MergeSlices(std::span<const LogprobSlice>(&slice, 1), top_n);
}

void WholeRowLogprobs(std::span<const ShardedLogprobRow> rows, std::vector<TokenLogprobs>* out, ThreadPool* pool) {
  out->assign(rows.size(), TokenLogprobs());
  ForEachRow(pool, rows.size(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) (*out)[i] = ComputeLogprobs(rows[i].logits, rows[i].token, rows[i].top_n);
  });
}

Status ShardedLogprobs(sharding::Communicator& comm, int32_t vocab_begin, std::span<const ShardedLogprobRow> rows,
                       std::vector<TokenLogprobs>* out, ThreadPool* pool) {
  for (const ShardedLogprobRow& row : rows) {
    if (row.top_n < 0 || row.top_n > kMaxTopLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat("top_logprobs ", row.top_n, " outside [0, ", kMaxTopLogprobs, "]"));
    }
  }
  const size_t ranks = static_cast<size_t>(comm.size());
  std::vector<float> send(rows.size() * kSliceFloats);
  ForEachRow(pool, rows.size(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Encode(SummarizeSlice(rows[i].logits, vocab_begin, rows[i].token, rows[i].top_n), &send[i * kSliceFloats]);
    }
  });
  std::vector<float> gathered(ranks * send.size());
  if (!send.empty()) BF_RETURN_IF_ERROR(comm.AllGather(send.data(), send.size() * sizeof(float), gathered.data()));
  out->assign(rows.size(), TokenLogprobs());
  std::vector<LogprobSlice> slices(ranks);
  for (size_t i = 0; i < rows.size(); ++i) {
    // Rank order, so every rank merges the same values in the same order.
    for (size_t r = 0; r < ranks; ++r) slices[r] = Decode(&gathered[(r * rows.size() + i) * kSliceFloats]);
    (*out)[i] = MergeSlices(slices, rows[i].top_n);
  }
  return absl::OkStatus();
}

}  // namespace bitfleet::worker

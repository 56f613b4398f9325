#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>

#include "core/spin_wait.h"

namespace bitfleet {

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  workers_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: ordered before notify's check for sleepers
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WaitWhileEqual(const std::atomic<uint32_t>& word, uint32_t seen) {
  // Reading the clock costs ~20 ns, so it is read every 64 polls only.
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (uint32_t polls = 1;; ++polls) {
    if (word.load(std::memory_order_acquire) != seen) return;
    CpuRelax();
    if (polls % 64 == 0 &&
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count() > kSpinNanos) {
      break;
    }
  }
  // Block. atomic::wait re-checks the value inside the futex, so a change between the last
  // poll and the sleep is not lost; it may also return spuriously, hence the loop.
  while (word.load(std::memory_order_acquire) == seen) word.wait(seen, std::memory_order_acquire);
}

void ThreadPool::RunClaimedIndices() {
  const uint32_t n = static_cast<uint32_t>(n_threads_);
  for (;;) {
    // acq_rel: the acquire pairs with Run's release of next_index_, so job_ is the job whose
    // index this claims.
    const uint32_t index = next_index_.fetch_add(1, std::memory_order_acq_rel);
    if (index >= n) return;
    (*job_)(static_cast<int>(index), n_threads_);
    // seq_cst RMW, then notify: the caller may have gone to sleep on finished_.
    if (finished_.fetch_add(1) + 1 == n - 1) finished_.notify_all();
  }
}

void ThreadPool::Run(FunctionRef<void(int, int)> fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  finished_.store(0, std::memory_order_relaxed);
  next_index_.store(1, std::memory_order_release);
  // seq_cst RMW before notify (which skips the syscall when no worker sleeps).
  generation_.fetch_add(1);
  generation_.notify_all();
  fn(0, n_threads_);
  // Indices no worker has claimed yet run here rather than wait for a worker to wake.
  RunClaimedIndices();
  const uint32_t all = static_cast<uint32_t>(n_threads_ - 1);
  for (;;) {
    const uint32_t done = finished_.load(std::memory_order_acquire);
    if (done == all) break;
    WaitWhileEqual(finished_, done);
  }
  job_ = nullptr;
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  const int64_t workers = std::min<int64_t>(units, n_threads_);
  if (workers <= 1) {
    fn(0, n);
    return;
  }
  auto chunk = [&](int index, int /*count*/) {
    if (index >= workers) return;
    const int64_t begin_unit = units * index / workers;
    const int64_t end_unit = units * (index + 1) / workers;
    const int64_t begin = begin_unit * grain;
    const int64_t end = std::min(n, end_unit * grain);
    if (begin < end) fn(begin, end);
  };
  Run(chunk);
}

void ThreadPool::ParallelForDynamic(int64_t n, int64_t chunk, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(1, chunk);
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (chunks == 1 || n_threads_ == 1) {
    for (int64_t begin = 0; begin < n; begin += chunk) fn(begin, std::min(n, begin + chunk));
    return;
  }
  next_chunk_.store(0, std::memory_order_relaxed);  // published by Run's release
  Run([&](int /*index*/, int /*count*/) {
    for (;;) {
      const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      fn(c * chunk, std::min(n, (c + 1) * chunk));
    }
  });
}

void ThreadPool::ParallelForGuided(int64_t n, int64_t grain, int64_t max_chunk,
                                   FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  max_chunk = std::max(grain, max_chunk / grain * grain);
  if (n_threads_ == 1 || n <= grain) {
    for (int64_t begin = 0; begin < n; begin += max_chunk) fn(begin, std::min(n, begin + max_chunk));
    return;
  }
  const int64_t divisor = 2 * static_cast<int64_t>(n_threads_);
  next_chunk_.store(0, std::memory_order_relaxed);  // published by Run's release
  Run([&](int /*index*/, int /*count*/) {
    int64_t begin = next_chunk_.load(std::memory_order_relaxed);
    for (;;) {
      if (begin >= n) return;
      const int64_t size = std::clamp((n - begin) / divisor / grain * grain, grain, max_chunk);
      // On failure `begin` is reloaded with the current value and the size recomputed.
      if (next_chunk_.compare_exchange_weak(begin, begin + size, std::memory_order_relaxed)) {
        fn(begin, std::min(n, begin + size));
        begin = next_chunk_.load(std::memory_order_relaxed);
      }
    }
  });
}

void ThreadPool::WorkerLoop() {
  uint32_t seen = 0;
  for (;;) {
    WaitWhileEqual(generation_, seen);
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_relaxed)) return;
    RunClaimedIndices();
  }
}

}  // namespace bitfleet

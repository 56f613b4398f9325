// A persistent pool of worker threads for data-parallel kernels. The per-token path must not
// create threads or allocate, so threads are started once and parked between jobs.
//
// Waking is hybrid: a worker that finished a job spins (with `pause`) for a short while on the
// job counter before it blocks on a futex (C++20 atomic wait), and so does the caller waiting
// for the workers. A decode step issues a few hundred short jobs (one per matmul) back to back,
// microseconds apart: spinning hands each one over in well under a microsecond, where a
// condition-variable wake costs tens of microseconds (a syscall on both sides and a scheduler
// round trip). The spin is bounded (kSpinNanos), so an idle pool, or more pools than cores
// (tests that run several ranks in one process), costs little CPU beyond that.
//
// Work sharing: the thread indices of a Run are tasks that any thread may claim. The caller
// runs index 0, then claims every index no worker has started yet, and waits only for indices
// already running. So a worker that is descheduled (another process on its core) never stalls
// a job: the caller does its share instead of waiting for it to be scheduled again.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "core/function_ref.h"

namespace bitfleet {

class ThreadPool {
 public:
  // `n_threads` >= 1 counts the calling thread: a pool of 1 runs everything inline.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(index, n_threads) once for every index in [0, n_threads) and returns when all have
  // finished. The caller runs index 0; the others run on the workers, or on the caller after
  // index 0 when a worker has not picked them up by then. Two indices never run at the same
  // time on one thread, so per-index scratch is safe; per-thread identity is not guaranteed.
  // Not reentrant: one Run at a time, from one caller thread (Run, ParallelFor and
  // ParallelForDynamic from inside fn are not allowed). Never allocates (FunctionRef), so it
  // is safe on the per-token path.
  void Run(FunctionRef<void(int, int)> fn);

  // Splits [0, n) into contiguous chunks, at most one per thread, each a multiple of `grain`
  // except the last, and runs fn(begin, end) on them.
  void ParallelFor(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn);

  // Covers [0, n) with chunks of `chunk` (the last one shorter) that threads take in order from
  // a shared counter until none are left: a thread that is slowed down (another process on its
  // core) simply takes fewer chunks, where ParallelFor would make everyone wait for its fixed
  // share. Each fn(begin, end) call gets one chunk; begin is a multiple of `chunk`.
  void ParallelForDynamic(int64_t n, int64_t chunk, FunctionRef<void(int64_t, int64_t)> fn);

  // Guided self-scheduling: like ParallelForDynamic, but each chunk taken is about the
  // remaining range / (2 × threads), rounded down to a multiple of `grain` and clamped to
  // [grain, max_chunk]. Early chunks are long (a streaming kernel keeps its prefetch going),
  // the last ones short, so threads finish within about one short chunk of each other. Each
  // fn(begin, end) call gets one chunk; begin is a multiple of `grain`.
  void ParallelForGuided(int64_t n, int64_t grain, int64_t max_chunk, FunctionRef<void(int64_t, int64_t)> fn);

  // How long a waiting thread spins before it blocks (nanoseconds).
  static constexpr int64_t kSpinNanos = 100'000;

 private:
  void WorkerLoop();
  // Claims and runs indices [1, n_threads) of the current job until none are left.
  void RunClaimedIndices();
  // Spins up to kSpinNanos while `word` == `seen`, then blocks until it changes.
  static void WaitWhileEqual(const std::atomic<uint32_t>& word, uint32_t seen);

  const int n_threads_;
  std::vector<std::thread> workers_;
  // The current job. Written before next_index_ is reset (release); read by a thread only
  // after it claimed an index of that job from next_index_ (acquire).
  const FunctionRef<void(int, int)>* job_ = nullptr;
  // Bumped once per Run (and at shutdown); idle workers wait for it to change.
  alignas(64) std::atomic<uint32_t> generation_{0};
  // Next unclaimed index of the current job (reset to 1 per Run; claims past n_threads_ are
  // no-ops, so a late worker that finds nothing left touches nothing).
  alignas(64) std::atomic<uint32_t> next_index_{0};
  // Indices >= 1 of the current job that have finished; the caller waits for n_threads_ - 1.
  alignas(64) std::atomic<uint32_t> finished_{0};
  // Next chunk (ParallelForDynamic) or next element (ParallelForGuided) of the current job.
  alignas(64) std::atomic<int64_t> next_chunk_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace bitfleet

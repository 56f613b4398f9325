// A persistent pool of worker threads for data-parallel kernels. The per-token path must not
// create threads or allocate, so threads are started once and parked between jobs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
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

  // Runs fn(thread_index, n_threads) once on every thread (the caller is index 0) and returns
  // when all have finished. Not reentrant: one Run at a time, from one caller thread. Never
  // allocates (FunctionRef), so it is safe on the per-token path.
  void Run(FunctionRef<void(int, int)> fn);

  // Splits [0, n) into contiguous chunks, at most one per thread, each a multiple of `grain`
  // except the last, and runs fn(begin, end) on them.
  void ParallelFor(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn);

 private:
  void WorkerLoop(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const FunctionRef<void(int, int)>* job_ = nullptr;  // valid while a Run is in flight
  uint64_t generation_ = 0;                              // bumped per Run; guarded by mu_
  int pending_ = 0;                                      // workers still running the job
  bool stop_ = false;
};

}  // namespace bitfleet

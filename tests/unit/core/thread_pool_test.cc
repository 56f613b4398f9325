#include "core/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet {
namespace {

TEST(ThreadPoolTest, RunReachesEveryIndexOnce) {
  for (int n : {1, 2, 5}) {
    ThreadPool pool(n);
    std::vector<std::atomic<int>> hits(n);
    for (int round = 0; round < 100; ++round) {
      pool.Run([&](int i, int count) {
        EXPECT_EQ(count, n);
        hits[i].fetch_add(1);
      });
    }
    for (int i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 100) << "index " << i;
  }
}

TEST(ThreadPoolTest, RunReturnsOnlyAfterEveryIndexFinished) {
  ThreadPool pool(4);
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> done{0};
    pool.Run([&](int i, int) {
      if (i % 2 == 1) std::this_thread::sleep_for(std::chrono::microseconds(50));
      done.fetch_add(1);
    });
    ASSERT_EQ(done.load(), 4) << "round " << round;
  }
}

TEST(ThreadPoolTest, IndicesOfOneRunNeverOverlapOnOneThread) {
  // Per-index scratch relies on this: a thread running two indices runs them one after the
  // other. Each index marks the thread busy while it runs.
  ThreadPool pool(3);
  for (int round = 0; round < 300; ++round) {
    std::vector<std::thread::id> ids(3);
    std::atomic<int> overlaps{0};
    pool.Run([&](int i, int) {
      thread_local int depth = 0;
      if (++depth != 1) overlaps.fetch_add(1);
      ids[i] = std::this_thread::get_id();
      --depth;
    });
    EXPECT_EQ(overlaps.load(), 0);
    EXPECT_EQ(ids[0], std::this_thread::get_id()) << "index 0 runs on the caller";
  }
}

TEST(ThreadPoolTest, WakesWorkersThatWentToSleep) {
  // Gaps longer than the spin make every worker block on the futex before the next job.
  ThreadPool pool(3);
  for (int round = 0; round < 20; ++round) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(3 * ThreadPool::kSpinNanos));
    std::vector<std::atomic<int>> hits(3);
    pool.Run([&](int i, int) { hits[i].fetch_add(1); });
    for (int i = 0; i < 3; ++i) ASSERT_EQ(hits[i].load(), 1) << "round " << round << " index " << i;
  }
}

TEST(ThreadPoolTest, ManyPoolsOnFewCoresMakeProgress) {
  // More spinning threads than cores (as when several ranks share a process): every job must
  // still finish, with the right results.
  constexpr int kPools = 4;
  std::vector<std::thread> callers;
  std::atomic<int64_t> total{0};
  for (int p = 0; p < kPools; ++p) {
    callers.emplace_back([&total] {
      ThreadPool pool(3);
      for (int round = 0; round < 300; ++round) {
        std::atomic<int64_t> sum{0};
        pool.ParallelForDynamic(1000, 7, [&](int64_t b, int64_t e) {
          int64_t s = 0;
          for (int64_t i = b; i < e; ++i) s += i;
          sum.fetch_add(s);
        });
        total.fetch_add(sum.load() == 999 * 1000 / 2 ? 1 : 0);
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), kPools * 300);
}

TEST(ThreadPoolTest, ParallelForCoversRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 7, 64, 1000}) {
    std::vector<std::atomic<int>> seen(n);
    pool.ParallelFor(n, 8, [&](int64_t b, int64_t e) {
      EXPECT_EQ(b % 8, 0);
      for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i].load(), 1) << i;
  }
}

TEST(ThreadPoolTest, ParallelForDynamicCoversRangeExactlyOnceInChunks) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 64, 1000, 1001}) {
      for (int64_t chunk : {1, 8, 100, 5000}) {
        std::vector<std::atomic<int>> seen(n);
        pool.ParallelForDynamic(n, chunk, [&](int64_t b, int64_t e) {
          EXPECT_EQ(b % chunk, 0);
          EXPECT_TRUE(e - b == chunk || e == n) << b << ".." << e;
          for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "n " << n << " chunk " << chunk << " i " << i;
      }
    }
  }
}

TEST(ThreadPoolTest, ParallelForGuidedCoversRangeExactlyOnceInShrinkingChunks) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 64, 1000, 1001, 100000}) {
      for (int64_t grain : {1, 16}) {
        for (int64_t max_chunk : {16, 100, 1 << 20}) {
          std::vector<std::atomic<int>> seen(n);
          std::atomic<int64_t> largest{0};
          std::atomic<int64_t> calls{0};
          pool.ParallelForGuided(n, grain, max_chunk, [&](int64_t b, int64_t e) {
            EXPECT_EQ(b % grain, 0);
            EXPECT_LT(b, e);
            const int64_t size = e - b;
            // Never above the (grain-rounded) cap; short only at the end of the range.
            EXPECT_LE(size, std::max(grain, max_chunk / grain * grain));
            EXPECT_TRUE(size % grain == 0 || e == n) << b << ".." << e;
            int64_t prev = largest.load();
            while (size > prev && !largest.compare_exchange_weak(prev, size)) {
            }
            calls.fetch_add(1);
            for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
          });
          for (int64_t i = 0; i < n; ++i) {
            ASSERT_EQ(seen[i].load(), 1) << "n " << n << " grain " << grain << " max " << max_chunk << " i " << i;
          }
          if (threads > 1 && n == 100000 && grain == 1 && max_chunk == (1 << 20)) {
            // Guided: the first chunk is about n / (2 threads), and the range takes more than
            // one chunk per thread (the tail is split finer).
            EXPECT_EQ(largest.load(), n / (2 * threads));
            EXPECT_GT(calls.load(), 2 * threads);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace bitfleet

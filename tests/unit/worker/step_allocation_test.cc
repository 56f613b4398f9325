// The per-token path must not allocate (scratch is sized at load time): counts heap
// allocations made by decode Steps through a replaced global operator new.
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "gtest/gtest.h"
#include "tests/unit/worker/runner_test_util.h"
#include "worker/model_runner.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};
}  // namespace

// Replacing the global allocation functions is allowed ([replacement.functions]); GCC cannot
// see that delete below pairs with this new.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace bitfleet::worker {
namespace {

class StepAllocationTest : public ::testing::TestWithParam<const char*> {};

TEST_P(StepAllocationTest, DecodeAndPrefillStepsDoNotAllocate) {
  const DType type = std::string(GetParam()) == "llama" ? DType::kF32 : DType::kTQ2_0;
  auto path = testing::SynthTinyModel(GetParam(), type);
  ASSERT_TRUE(path.ok()) << path.status();
  auto runner = testing::MakeRunner(*path, /*threads=*/3);
  ASSERT_TRUE(runner.ok()) << runner.status();
  ModelRunner& r = **runner;
  cache::BlockPool pool(r.kv_blocks());
  cache::BlockTable a(r.kv_block_size()), b(r.kv_block_size());
  ASSERT_TRUE(a.Reserve(pool, 64).ok());
  ASSERT_TRUE(b.Reserve(pool, 64).ok());
  const std::vector<int32_t> prompt = testing::TestTokens(20, r.n_vocab(), 1);
  std::vector<int32_t> next = {5, 6};

  // Warm-up step (first touches of lazily committed memory are not allocations, but keep the
  // measured steps representative).
  SequenceStep steps[2] = {{prompt, 0, a.ids(), false}, {prompt, 0, b.ids(), true}};
  ASSERT_TRUE(r.Step(steps).ok());

  g_allocations = 0;
  g_counting = true;
  bool ok = true;
  for (int i = 0; i < 10 && ok; ++i) {
    // One sequence decodes, the other prefills a chunk: the mixed step serving runs.
    steps[0] = {std::span(next).first(1), 20 + i, a.ids(), false};
    steps[1] = {std::span(prompt).first(3), 20 + 3 * i, b.ids(), false};
    ok = r.Step(steps).ok();
  }
  g_counting = false;
  ASSERT_TRUE(ok);
  EXPECT_EQ(g_allocations.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Archs, StepAllocationTest, ::testing::Values("llama", "bitnet"));

}  // namespace
}  // namespace bitfleet::worker

// BITFLEET_FAULT_INJECT parsing (the firing itself is tested through mpirun in
// tests/mpi/tp_commands_test.cc: a rank that exits or hangs must fail the job).
#include "worker/fault_injection.h"

#include "gtest/gtest.h"

namespace bitfleet::worker {
namespace {

TEST(FaultInjectionTest, ArmsOnlyTheNamedRank) {
  auto armed = FaultInjector::Parse("1:5:hang", 1);
  ASSERT_TRUE(armed.ok()) << armed.status();
  EXPECT_EQ(armed->action(), FaultInjector::Action::kHang);
  EXPECT_EQ(armed->step(), 5);
  auto other = FaultInjector::Parse("1:5:exit", 0);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->action(), FaultInjector::Action::kNone);
  auto exit = FaultInjector::Parse("0:0:exit", 0);
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->action(), FaultInjector::Action::kExit);
}

TEST(FaultInjectionTest, UnsetOrEmptyDoesNothing) {
  for (const char* spec : {static_cast<const char*>(nullptr), ""}) {
    auto none = FaultInjector::Parse(spec, 0);
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(none->action(), FaultInjector::Action::kNone);
    EXPECT_TRUE(none->BeforeStep().ok());  // never fires
  }
}

TEST(FaultInjectionTest, MalformedSpecsAreRefused) {
  for (const char* spec : {"1:5", "1:5:crash", "a:5:exit", "1:-2:exit", "-1:0:hang", "1:5:exit:9"}) {
    auto parsed = FaultInjector::Parse(spec, 1);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
}

// A fault armed for a later step leaves earlier steps alone.
TEST(FaultInjectionTest, FiresOnlyAtItsStep) {
  auto armed = FaultInjector::Parse("0:1000:exit", 0);
  ASSERT_TRUE(armed.ok());
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(armed->BeforeStep().ok()) << i;
  // still running: step 1000 was never reached
}

// "error" fails its step and every later one (a broken device does not recover), and only on
// the named rank.
TEST(FaultInjectionTest, ErrorFailsItsStepAndEveryLaterOne) {
  auto armed = FaultInjector::Parse("0:2:error", 0);
  ASSERT_TRUE(armed.ok()) << armed.status();
  EXPECT_EQ(armed->action(), FaultInjector::Action::kError);
  EXPECT_TRUE(armed->BeforeStep().ok());
  EXPECT_TRUE(armed->BeforeStep().ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(armed->BeforeStep().code(), absl::StatusCode::kInternal) << i;
  auto other = FaultInjector::Parse("0:0:error", 1);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->BeforeStep().ok());
}

}  // namespace
}  // namespace bitfleet::worker

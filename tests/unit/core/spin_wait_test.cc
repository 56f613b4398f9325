// core/spin_wait.h with polling on (BITFLEET_SPIN_WAIT_US is read once per process, so this
// test is a binary of its own and sets it before anything reads it).
#include "core/spin_wait.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"

namespace bitfleet {
namespace {

const bool kPollingOn = [] { return setenv("BITFLEET_SPIN_WAIT_US", "200000", 1) == 0; }();

using Clock = std::chrono::steady_clock;

TEST(SpinWaitTest, ReadsTheWindowFromTheEnvironment) {
  ASSERT_TRUE(kPollingOn);
  EXPECT_EQ(SpinWaitMicros(), 200000);
}

// The condition is set without any notification: only polling can see it.
TEST(SpinWaitTest, SeesAConditionSetWithinTheWindowWithoutANotification) {
  std::mutex mu;
  bool flag = false;
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard lock(mu);
    flag = true;
  });
  std::unique_lock lock(mu);
  EXPECT_TRUE(SpinUntil(lock, [&] { return flag; }));
  EXPECT_TRUE(lock.owns_lock());
  lock.unlock();
  setter.join();
}

TEST(SpinWaitTest, GivesUpAfterTheWindowWithTheLockHeld) {
  std::mutex mu;
  std::unique_lock lock(mu);
  const Clock::time_point start = Clock::now();
  EXPECT_FALSE(SpinUntil(lock, [] { return false; }));
  EXPECT_GE(Clock::now() - start, std::chrono::microseconds(200000));
  EXPECT_TRUE(lock.owns_lock());
}

TEST(SpinWaitTest, ATrueConditionReturnsAtOnce) {
  std::mutex mu;
  std::unique_lock lock(mu);
  const Clock::time_point start = Clock::now();
  EXPECT_TRUE(SpinUntil(lock, [] { return true; }));
  EXPECT_LT(Clock::now() - start, std::chrono::microseconds(200000));
}

}  // namespace
}  // namespace bitfleet

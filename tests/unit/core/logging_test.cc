#include "core/logging.h"

#include <gtest/gtest.h>

namespace bitfleet {
namespace {

// The level a server passes on to its workers (tools/commands/serve.cc) is the one it was
// given, by a name SetLogLevel accepts back; an unknown name changes nothing.
TEST(LoggingTest, LogLevelNameReportsWhatSetLogLevelSet) {
  const std::string before = LogLevelName();
  for (const std::string level : {"trace", "debug", "warn", "error", "off", "info"}) {
    ASSERT_TRUE(SetLogLevel(level));
    EXPECT_EQ(LogLevelName(), level);
    EXPECT_EQ(Logger("logging-test")->level(), spdlog::level::from_str(level)) << level;
  }
  EXPECT_FALSE(SetLogLevel("loud"));
  EXPECT_EQ(LogLevelName(), "info");
  ASSERT_TRUE(SetLogLevel(before));
}

}  // namespace
}  // namespace bitfleet

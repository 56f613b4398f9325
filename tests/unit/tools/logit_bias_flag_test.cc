// `--logit-bias ID=BIAS` parsing (run, generate).
#include "tools/commands/logit_bias_flag.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::tools {
namespace {

TEST(LogitBiasFlagTest, EntriesBecomeSortedPairs) {
  const std::vector<std::string> entries = {"300=100", "7=-2.5", "0=1e1"};
  auto parsed = ParseLogitBias(entries);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const std::vector<std::pair<int32_t, float>> want = {{0, 10.0f}, {7, -2.5f}, {300, 100.0f}};
  EXPECT_EQ(*parsed, want);
  EXPECT_TRUE(ParseLogitBias({}).ok());
}

TEST(LogitBiasFlagTest, MalformedEntriesNameThemselves) {
  for (const std::string bad : {"5", "=1", "5=", "x=1", "5=x", "5=1x", "-3=1", "5=inf", "5=nan", " 5=1"}) {
    const std::vector<std::string> entries = {bad};
    const auto parsed = ParseLogitBias(entries);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(parsed.status().message()).find("'" + bad + "'"), std::string::npos) << parsed.status();
  }
  const std::vector<std::string> twice = {"5=1", "6=1", "5=2"};
  const auto parsed = ParseLogitBias(twice);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(std::string(parsed.status().message()).find("token 5 is given twice"), std::string::npos);
}

}  // namespace
}  // namespace bitfleet::tools

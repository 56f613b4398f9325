// `bitfleet bench serve` (tools/commands/bench_serve.cc) against a served tiny model: its JSON
// counts what the server did (requests, output tokens, cold and cache-hit requests, prefix hit
// rate) exactly, the open loop sends nothing before its arrival times, and bad flags are refused
// with a reason. The figures of the serving issue come from this program.
#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/engine_test_assets.h"
#include "tests/e2e/serving_harness.h"

namespace bitfleet::e2e {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

class BenchServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto bin = BitfleetBinary();
    if (!bin.ok()) GTEST_SKIP() << bin.status();
    bin_ = *bin;
    auto model = SynthModel(::testing::TempDir(), "llama", "tiny", "f16", 3);
    if (absl::IsNotFound(model.status())) GTEST_SKIP() << model.status();
    ASSERT_TRUE(model.ok()) << model.status();
    auto served = StartServe(*model, 1, "bench-serve");
    if (absl::IsNotFound(served.status())) GTEST_SKIP() << served.status();
    ASSERT_TRUE(served.ok()) << served.status();
    served_ = *std::move(served);
  }
  void TearDown() override {
    if (served_ == nullptr) return;
    served_->process->Signal(SIGTERM);
    EXPECT_EQ(served_->process->Wait(30s).value_or(-1), 0);
  }

  // Runs `bench serve` against the server with `flags`; its exit code and output.
  std::pair<int, std::string> Bench(const std::vector<std::string>& flags, const std::string& name) {
    std::vector<std::string> argv = {bin_, "bench", "serve", "--target",
                                     absl::StrCat("127.0.0.1:", served_->port)};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto process = Process::Start(argv, ::testing::TempDir() + "/" + name + ".log");
    if (!process.ok()) return {-1, process.status().ToString()};
    auto code = (*process)->Wait(120s);
    return {code.value_or(-1), (*process)->Log()};
  }
  // The JSON object the benchmark printed (ADD_FAILURE and an empty object when there is none).
  static Json Parse(const std::string& output) {
    const size_t open = output.find('{');
    const size_t close = output.rfind('}');
    if (open == std::string::npos || close == std::string::npos || close < open) {
      ADD_FAILURE() << "no JSON in:\n" << output;
      return Json::object();
    }
    Json json = Json::parse(output.substr(open, close - open + 1), nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) ADD_FAILURE() << "bad JSON in:\n" << output;
    return json;
  }

  std::string bin_;
  std::unique_ptr<Served> served_;
};

// One stream, four requests of 40 tokens sharing their first 32 (two blocks of 16): the first is
// cold, the other three reuse both blocks, so 96 of the 160 prompt tokens come from the cache.
TEST_F(BenchServeTest, ClosedLoopCountsWhatTheServerDid) {
  const auto [code, output] = Bench({"-c", "1", "-n", "4", "--prompt-len", "40", "--gen-len", "6",
                                     "--shared-prefix", "32", "--seed", "5"},
                                    "bench-closed");
  ASSERT_EQ(code, 0) << output;
  const Json json = Parse(output);
  EXPECT_EQ(json["requests"], 4);
  EXPECT_EQ(json["errors"], 0);
  EXPECT_EQ(json["output_tokens"], 24);
  EXPECT_EQ(json["cold_requests"], 1);
  EXPECT_EQ(json["cache_hit_requests"], 3);
  EXPECT_DOUBLE_EQ(json["prefix_hit_rate"].get<double>(), 96.0 / 160.0);
  EXPECT_TRUE(json["request_rate"].is_null()) << json.dump();
  EXPECT_GT(json["output_tok_s"].get<double>(), 0);
  EXPECT_GT(json["ttft_p50_ms"].get<double>(), 0);
  EXPECT_EQ(json["model"], "bitfleet-synth-llama-tiny");
  EXPECT_TRUE(json["logprobs"].is_null());

  // With --logprobs every request asks for them, and a reply without one per token is an error.
  const auto [scored_code, scored_output] =
      Bench({"-c", "2", "-n", "4", "--prompt-len", "12", "--gen-len", "5", "--logprobs", "3"}, "bench-logprobs");
  ASSERT_EQ(scored_code, 0) << scored_output;
  const Json scored = Parse(scored_output);
  EXPECT_EQ(scored["errors"], 0);
  EXPECT_EQ(scored["logprobs"], 3);
  EXPECT_EQ(scored["output_tokens"], 20);
}

// Open loop at 40 requests/s: nothing is sent before its arrival, so the run lasts at least until
// the last one, and the same seed gives the same arrival times.
TEST_F(BenchServeTest, OpenLoopFollowsItsArrivalTimes) {
  const std::vector<std::string> flags = {"-c", "2", "-n", "6", "--prompt-len", "8", "--gen-len", "4",
                                          "--request-rate", "40", "--seed", "9"};
  const auto [code, output] = Bench(flags, "bench-open");
  ASSERT_EQ(code, 0) << output;
  const Json json = Parse(output);
  EXPECT_EQ(json["errors"], 0);
  EXPECT_EQ(json["output_tokens"], 24);
  EXPECT_DOUBLE_EQ(json["request_rate"].get<double>(), 40.0);
  const double last_arrival = json["last_arrival_s"].get<double>();
  EXPECT_GT(last_arrival, 0);
  EXPECT_GE(json["wall_s"].get<double>(), last_arrival);
  EXPECT_GE(json["send_delay_p50_ms"].get<double>(), 0);
  const auto [code_again, output_again] = Bench(flags, "bench-open-again");
  ASSERT_EQ(code_again, 0) << output_again;
  EXPECT_EQ(Parse(output_again)["last_arrival_s"].get<double>(), last_arrival);
}

TEST_F(BenchServeTest, BadFlagsAreRefusedWithTheReason) {
  const auto [prefix_code, prefix_output] = Bench({"--prompt-len", "8", "--shared-prefix", "9"}, "bench-bad-prefix");
  EXPECT_NE(prefix_code, 0);
  EXPECT_NE(prefix_output.find("--shared-prefix"), std::string::npos) << prefix_output;
  // The served context is 512 (StartServe).
  const auto [context_code, context_output] = Bench({"--prompt-len", "500", "--gen-len", "20"}, "bench-bad-context");
  EXPECT_EQ(context_code, 2);
  EXPECT_NE(context_output.find("exceeds the served context (512)"), std::string::npos) << context_output;
  const auto [rate_code, rate_output] = Bench({"--request-rate", "-1"}, "bench-bad-rate");
  EXPECT_NE(rate_code, 0);
  EXPECT_NE(rate_output.find("--request-rate"), std::string::npos) << rate_output;
}

}  // namespace
}  // namespace bitfleet::e2e

// The engine commands under mpirun, through the real binary ($BITFLEET_BIN), and group failure:
//   - `mpirun -np 2 bitfleet run` prints what one process prints (greedy and seeded sampling);
//   - `mpirun -np 2 bitfleet logits` writes what one process writes (within 1e-4);
//   - a rank that hangs (or dies) mid-run makes the job exit non-zero with a clear error within
//     a bounded time (BITFLEET_FAULT_INJECT, worker/fault_injection.h), never a silent hang.
// This binary is not itself started by mpirun; it launches mpirun.
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/e2e/engine_test_assets.h"
#include "tests/unit/sharding/tp_test_util.h"

namespace bitfleet::tp_testing {
namespace {

struct Launch {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
  double seconds = 0;
};

// Runs `command` (through the shell, killed after `limit_s` by coreutils timeout) and captures
// stdout and stderr.
Launch RunShell(const std::string& command, int limit_s = 120) {
  Launch launch;
  const std::string full = "timeout -s KILL " + std::to_string(limit_s) + " " + command + " 2>&1";
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen(full.c_str(), "r");
  if (pipe == nullptr) return launch;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) launch.output.append(buffer, n);
  const int status = pclose(pipe);
  launch.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  launch.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return launch;
}

std::string Mpirun(int np, const std::string& env = "") {
  std::string cmd = std::string(BITFLEET_MPIEXEC) + " -np " + std::to_string(np) + " " + BITFLEET_MPIRUN_FLAGS;
  if (!env.empty()) cmd += " -x " + env;
  return cmd + " ";
}

class TpCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto bin = e2e::BitfleetBinary();
    if (!bin.ok()) GTEST_SKIP() << bin.status();
    bin_ = e2e::ShellQuote(*bin);
    auto path = SynthModel(TinySpec("llama", DType::kF32), ::testing::TempDir());
    ASSERT_TRUE(path.ok()) << path.status();
    model_ = e2e::ShellQuote(*path);
  }

  // stdout only of a successful command (stderr to the test log).
  std::string Stdout(const std::string& command) {
    const e2e::CommandResult r = e2e::RunCommand(command);
    EXPECT_EQ(r.exit_code, 0) << command;
    return r.out;
  }

  std::string bin_;
  std::string model_;
};

TEST_F(TpCommandsTest, RunUnderMpirunPrintsWhatOneProcessPrints) {
  for (const std::string sampling : {"--temp 0", "--temp 0.9 --top-k 40 --top-p 0.9 --seed 3"}) {
    const std::string args = " run -m " + model_ + " -p 'Once upon' -n 40 -t 1 --ignore-eos " + sampling;
    const std::string one = Stdout(bin_ + args);
    const std::string two = Stdout(Mpirun(2) + bin_ + args);
    EXPECT_FALSE(one.empty());
    EXPECT_EQ(two, one) << sampling;  // rank 0 alone prints, and prints the same text
  }
}

TEST_F(TpCommandsTest, LogitsUnderMpirunMatchOneProcess) {
  const std::string dir = ::testing::TempDir();
  const std::string one_path = dir + "/tp-logits-1.f32";
  const std::string two_path = dir + "/tp-logits-2.f32";
  const std::string args = " logits -m " + model_ + " --tokens 1,50,300,7,900,12,5 -t 1 -o ";
  Stdout(bin_ + args + e2e::ShellQuote(one_path));
  Stdout(Mpirun(2) + bin_ + args + e2e::ShellQuote(two_path));
  std::ifstream a(one_path, std::ios::binary), b(two_path, std::ios::binary);
  std::vector<float> x(7 * 1024), y(7 * 1024);  // 7 tokens × the tiny vocabulary
  ASSERT_TRUE(a.read(reinterpret_cast<char*>(x.data()), x.size() * sizeof(float)));
  ASSERT_TRUE(b.read(reinterpret_cast<char*>(y.data()), y.size() * sizeof(float)));
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(x[i]) - y[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(x[i])));
  }
  EXPECT_LE(max_diff / max_ref, 1e-4);
}

TEST_F(TpCommandsTest, HungRankFailsTheJobWithinTheTimeout) {
  const Launch launch = RunShell(Mpirun(2, "BITFLEET_FAULT_INJECT=1:5:hang") + bin_ + " run -m " + model_ +
                                 " -n 60 -t 1 --temp 0 --ignore-eos --tp-timeout 2");
  EXPECT_NE(launch.exit_code, 0) << launch.output;
  EXPECT_NE(launch.exit_code, 128 + 9) << "killed by the test's own timeout: the job hung\n" << launch.output;
  EXPECT_NE(launch.output.find("fault injection: rank 1 hangs at step 5"), std::string::npos) << launch.output;
  EXPECT_NE(launch.output.find("did not complete within 2000 ms"), std::string::npos) << launch.output;
  EXPECT_LT(launch.seconds, 30.0) << launch.output;
}

TEST_F(TpCommandsTest, DeadRankFailsTheJobPromptly) {
  const Launch launch = RunShell(Mpirun(2, "BITFLEET_FAULT_INJECT=1:5:exit") + bin_ + " run -m " + model_ +
                                 " -n 60 -t 1 --temp 0 --ignore-eos --tp-timeout 2");
  EXPECT_NE(launch.exit_code, 0) << launch.output;
  EXPECT_NE(launch.exit_code, 128 + 9) << "killed by the test's own timeout: the job hung\n" << launch.output;
  EXPECT_NE(launch.output.find("fault injection: rank 1 exits at step 5"), std::string::npos) << launch.output;
  EXPECT_LT(launch.seconds, 30.0) << launch.output;
}

// A worker rank that cannot start (its model missing on its node) must not wait in
// MPI_Finalize for a peer that waits for it: the job ends at once, not when the peer's connect
// timeout (60 s here; no coordinator listens) runs out.
TEST_F(TpCommandsTest, WorkerThatCannotStartEndsItsGroupPromptly) {
  const std::string worker = bin_ + " worker --coordinator 127.0.0.1:9 --connect-timeout 60 -t 1 -m ";
  const Launch launch = RunShell(std::string(BITFLEET_MPIEXEC) + " " + BITFLEET_MPIRUN_FLAGS + " -np 1 " + worker +
                                 model_ + " : -np 1 " + worker + "/nonexistent/model.gguf");
  EXPECT_NE(launch.exit_code, 0) << launch.output;
  EXPECT_NE(launch.exit_code, 128 + 9) << "killed by the test's own timeout: the job hung\n" << launch.output;
  EXPECT_NE(launch.output.find("nonexistent"), std::string::npos) << launch.output;
  EXPECT_LT(launch.seconds, 30.0) << launch.output;
}

TEST_F(TpCommandsTest, InspectReportsEachRanksBytes) {
  const std::string out = Stdout(bin_ + " inspect " + model_ + " --tp 2 --load");
  EXPECT_NE(out.find("tensor parallel 2 ranks"), std::string::npos) << out;
  EXPECT_NE(out.find("rank 1: heads [2, 4), KV heads {1} (split), FFN [512, 1024), vocab [512, 1024)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("resident"), std::string::npos) << out;
  // A plan that cannot be honoured exits 1 naming the reason.
  const e2e::CommandResult bad = e2e::RunCommand(bin_ + " inspect " + model_ + " --tp 3");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("cannot split"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace bitfleet::tp_testing

// End-to-end checks of `bitfleet convert` and `bitfleet inspect` through the real binary
// ($BITFLEET_BIN), on a synthetic llama2.c checkpoint written to a temporary directory.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/model/convert/llama2c_test_util.h"

namespace bitfleet::convert {
namespace {

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout only
};

// Runs `command` through the shell and captures its stdout.
RunResult RunCommand(const std::string& command) {
  RunResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("BITFLEET_BIN");
    if (bin == nullptr || !std::filesystem::exists(bin)) GTEST_SKIP() << "BITFLEET_BIN is not built";
    bin_ = bin;
    dir_ = std::filesystem::path(::testing::TempDir()) / ("bitfleet-cli-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    testing::WriteFile((dir_ / "model.bin").string(), testing::MakeCheckpoint(testing::SmallHeader()).bytes);
    testing::WriteFile((dir_ / "tok.bin").string(), testing::MakeTokenizer(testing::SmallVocab()));
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string Path(const char* name) const { return (dir_ / name).string(); }
  std::string Bin() const { return bin_ + " --log-level warn "; }

  std::string bin_;
  std::filesystem::path dir_;
};

TEST_F(CliTest, ConvertThenInspectJson) {
  RunResult convert = RunCommand(Bin() + "convert --from llama2c " + Path("model.bin") + " --tokenizer " +
                          Path("tok.bin") + " -o " + Path("out.gguf") + " --type f16 2>" + Path("err.txt"));
  ASSERT_EQ(convert.exit_code, 0) << ReadText(dir_ / "err.txt");

  RunResult inspect = RunCommand(Bin() + "inspect --json " + Path("out.gguf"));
  ASSERT_EQ(inspect.exit_code, 0);
  const nlohmann::json report = nlohmann::json::parse(inspect.output);
  EXPECT_EQ(report["model"]["architecture"], "llama");
  EXPECT_EQ(report["model"]["name"], "model");  // the checkpoint's file stem
  EXPECT_EQ(report["model"]["n_embd"], 8);
  EXPECT_EQ(report["model"]["n_head_kv"], 1);
  EXPECT_EQ(report["model"]["tied_embeddings"], true);
  EXPECT_EQ(report["tensor_check"], "ok");
  EXPECT_EQ(report["tokenizer"]["model"], "llama");
  EXPECT_EQ(report["tokenizer"]["vocab_size"], 10);
  EXPECT_EQ(report["tokenizer"]["bos_token_id"], 1);
  EXPECT_EQ(report["tensors"].size(), 2u + 2u * 9u);
  EXPECT_EQ(report["tensors"][0]["name"], "token_embd.weight");
  EXPECT_EQ(report["tensors"][0]["type"], "f16");
  EXPECT_EQ(report["tensors"][0]["shape"], nlohmann::json::array({8, 10}));
  EXPECT_EQ(report["tensors"][0]["bytes"], 160);
  // All 2-D weights are f16: exactly 16 bits per weight for that group.
  ASSERT_EQ(report["matrices_by_type"].size(), 1u);
  EXPECT_EQ(report["matrices_by_type"][0]["type"], "f16");
  EXPECT_EQ(report["matrices_by_type"][0]["bits_per_weight"], 16.0);
  EXPECT_EQ(report["metadata"]["llama.vocab_size"], 10);
  EXPECT_EQ(report["metadata"]["tokenizer.ggml.add_bos_token"], true);

  RunResult text = RunCommand(Bin() + "inspect " + Path("out.gguf"));
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.output.find("architecture  llama"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("blk.1.ffn_down.weight"), std::string::npos) << text.output;
}

TEST_F(CliTest, ConvertRejectsABadCheckpoint) {
  std::vector<uint8_t> bytes = testing::MakeCheckpoint(testing::SmallHeader()).bytes;
  bytes.resize(bytes.size() - 8);
  testing::WriteFile(Path("bad.bin"), bytes);
  RunResult convert = RunCommand(Bin() + "convert --from llama2c " + Path("bad.bin") + " --tokenizer " + Path("tok.bin") +
                          " -o " + Path("bad.gguf") + " 2>" + Path("err.txt"));
  EXPECT_EQ(convert.exit_code, 1);
  EXPECT_NE(ReadText(dir_ / "err.txt").find("truncated"), std::string::npos) << ReadText(dir_ / "err.txt");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "bad.gguf"));
}

TEST_F(CliTest, InspectFailsOnANonGgufFile) {
  RunResult inspect = RunCommand(Bin() + "inspect " + Path("tok.bin") + " 2>" + Path("err.txt"));
  EXPECT_EQ(inspect.exit_code, 1);
  EXPECT_NE(ReadText(dir_ / "err.txt").find("bitfleet inspect:"), std::string::npos);
}

}  // namespace
}  // namespace bitfleet::convert

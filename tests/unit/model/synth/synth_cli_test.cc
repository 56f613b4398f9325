// The `bitfleet synth` and `bitfleet quantize` command lines: bad flags fail with a message that
// names the flag and the accepted values; good ones write loadable models. Runs the binary from
// BITFLEET_BIN and skips when it has not been built.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"

namespace bitfleet::synth {
namespace {

struct Result {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

class SynthCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("BITFLEET_BIN");
    if (bin == nullptr || !std::filesystem::exists(bin)) GTEST_SKIP() << "BITFLEET_BIN not built";
    bin_ = bin;
    dir_ = std::filesystem::path(::testing::TempDir()) / ("bitfleet_synth_cli_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  Result Run(const std::string& args) {
    Result result;
    const std::string command = "'" + bin_ + "' " + args + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return result;
    std::array<char, 4096> buffer;
    size_t n;
    while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
    const int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::string bin_;
  std::filesystem::path dir_;
};

TEST_F(SynthCliTest, BadFlagsFailWithClearErrors) {
  const std::string out = " -o " + Path("x.gguf");
  Result r = Run("synth --preset huge" + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown preset 'huge' (expected tiny, small, medium or large)"), std::string::npos)
      << r.output;
  r = Run("synth --arch gpt2" + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown architecture 'gpt2'"), std::string::npos) << r.output;
  r = Run("synth --type q5_k" + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown weight type 'q5_k'"), std::string::npos) << r.output;
  r = Run("synth --n-head 3" + out);  // 256 is not a multiple of 3
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("n_embd 256 is not a multiple of n_head 3"), std::string::npos) << r.output;
  r = Run("quantize " + Path("missing.gguf") + " " + Path("y.gguf") + " --type tq2_0");
  EXPECT_NE(r.exit_code, 0);
  r = Run("quantize --type tq2_0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(Path("x.gguf")));
}

TEST_F(SynthCliTest, SynthThenQuantizeWritesLoadableModels) {
  Result r = Run("synth --arch bitnet --preset tiny --type tq2_0 --seed 5 -o " + Path("a.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Run("quantize " + Path("a.gguf") + " " + Path("b.gguf") + " --type i2_s");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Run("synth --arch llama --n-embd 128 --n-head 2 --n-head-kv 1 --n-layer 1 --n-ff 256 --n-vocab 300 "
          "--n-ctx 64 --rope-base 500000 --rms-eps 1e-6 --activation relu2 --type q8_0 -o " +
          Path("c.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"a.gguf", "b.gguf", "c.gguf"}) {
    auto file = gguf::GgufFile::Open(Path(name));
    ASSERT_TRUE(file.ok()) << file.status();
    auto config = model::ReadModelConfig(**file);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_TRUE(model::ValidateTensors(*config, **file).ok()) << name;
  }
  auto c = gguf::GgufFile::Open(Path("c.gguf"));
  auto config = model::ReadModelConfig(**c);
  EXPECT_EQ(config->n_embd, 128u);
  EXPECT_EQ(config->n_layer, 1u);
  EXPECT_EQ(config->n_vocab, 300u);
  EXPECT_EQ(config->n_ctx_train, 64u);
  EXPECT_EQ(config->rope_freq_base, 500000.0f);
  EXPECT_EQ(config->rms_eps, 1e-6f);
  EXPECT_EQ(config->activation, model::Activation::kRelu2);
}

}  // namespace
}  // namespace bitfleet::synth

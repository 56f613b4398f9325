// Helpers for model-runner tests: synthetic models written to the test's temp dir, a runner
// over them, and relative error of logit rows.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/gguf/gguf.h"
#include "worker/model_runner.h"

namespace bitfleet::worker::testing {

// Writes (once per process and arguments) a synthetic model ("llama", "bitnet",
// "bitnet-b1.58") with tiny preset shapes and returns its path.
StatusOr<std::string> SynthTinyModel(const std::string& arch, DType type, uint64_t seed = 1);

// Copies `src` to `dst` adding one-element F32 "<name>.scale" tensors.
Status CopyWithScales(const std::string& src, const std::string& dst, const std::map<std::string, float>& scales);

StatusOr<std::shared_ptr<const gguf::GgufFile>> OpenModel(const std::string& path);

// A runner with test-sized limits.
StatusOr<std::unique_ptr<ModelRunner>> MakeRunner(const std::string& path, int threads = 2,
                                                  int max_step_tokens = 64, int max_logit_rows = 64);

// max_i |a_i - b_i| / max_i |b_i| over one row of n values.
double RelativeError(const float* a, const float* b, size_t n);

// ||a - b||_2 / ||b||_2 over one row of n values.
double L2RelativeError(const float* a, const float* b, size_t n);

// The largest RelativeError over rows of n_vocab values.
double MaxRowError(const std::vector<float>& a, const std::vector<float>& b, size_t n_vocab);

// Deterministic pseudo-random token ids in [0, n_vocab).
std::vector<int32_t> TestTokens(int n, int n_vocab, uint32_t seed);

}  // namespace bitfleet::worker::testing

// Values of synthetic weights, element by element from counter-based streams (random.h), so any
// row range is generated alone and the result is identical on every machine for a seed.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace bitfleet::synth {

// How a tensor's values are drawn.
enum class WeightKind {
  kNorm,      // 1 + k/1024 with k uniform in [-64, 64]: near one, exact in f32/f16/bf16
  kGaussian,  // approximately normal (Irwin-Hall 4) with standard deviation `stddev`
  kTernary,   // {-s, 0, +s}, each with probability 1/3, s an fp16 value
};

struct WeightSpec {
  WeightKind kind = WeightKind::kNorm;
  uint64_t key = 0;    // stream key (StreamKey(seed, tensor name))
  float stddev = 0.0f;  // kGaussian
  float scale = 0.0f;  // kTernary: s
};

// Writes elements [first, first + out.size()) of the tensor described by `spec`.
void GenerateWeights(const WeightSpec& spec, uint64_t first, std::span<float> out);

// A per-tensor ternary scale near `target_std` / sqrt(2/3) (the standard deviation of ternary
// values with P(0) = 1/3 is s * sqrt(2/3)), varied by a factor in [1, 1.25) drawn from
// `scale_key` so tensors differ, and rounded to fp16 so TQ1_0/TQ2_0 block scales hold it exactly.
float TernaryScale(double target_std, uint64_t scale_key);

}  // namespace bitfleet::synth

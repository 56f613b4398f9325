#include "model/synth/weight_init.h"

#include <cmath>

#include "core/fp16.h"
#include "model/synth/random.h"

namespace bitfleet::synth {

void GenerateWeights(const WeightSpec& spec, uint64_t first, std::span<float> out) {
  switch (spec.kind) {
    case WeightKind::kNorm:
      for (size_t i = 0; i < out.size(); ++i) {
        const int32_t k = static_cast<int32_t>(DrawBelow(Draw(spec.key, first + i), 129)) - 64;
        out[i] = 1.0f + static_cast<float>(k) / 1024.0f;  // both steps exact
      }
      return;
    case WeightKind::kGaussian: {
      // One rounding: an exact integer times a per-tensor factor.
      const float factor = static_cast<float>(spec.stddev / kIrwinHallStd);
      for (size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<float>(IrwinHall4(Draw(spec.key, first + i))) * factor;
      }
      return;
    }
    case WeightKind::kTernary: {
      const float values[3] = {-spec.scale, 0.0f, spec.scale};
      for (size_t i = 0; i < out.size(); ++i) out[i] = values[DrawBelow(Draw(spec.key, first + i), 3)];
      return;
    }
  }
}

float TernaryScale(double target_std, uint64_t scale_key) {
  const double variation = 1.0 + DrawBelow(Draw(scale_key, 0), 64) / 256.0;
  const double s = target_std / std::sqrt(2.0 / 3.0) * variation;
  return HalfToFloat(FloatToHalf(static_cast<float>(s)));
}

}  // namespace bitfleet::synth

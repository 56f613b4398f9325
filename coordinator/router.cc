#include "coordinator/router.h"

#include <algorithm>

namespace bitfleet::coordinator {

double RouteCost(const ReplicaCandidate& c, const RouterOptions& options) {
  const int64_t uncached = std::max<int64_t>(0, c.prompt_tokens - c.cached_tokens);
  return static_cast<double>(uncached) + static_cast<double>(c.pending_prefill_tokens) +
         static_cast<double>(c.sequences) * options.per_sequence_cost;
}

int PickReplica(std::span<const ReplicaCandidate> candidates, const RouterOptions& options) {
  int best = -1;
  double best_cost = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (!candidates[i].healthy || !candidates[i].fits) continue;
    const double cost = RouteCost(candidates[i], options);
    if (best < 0 || cost < best_cost) {
      best = static_cast<int>(i);
      best_cost = cost;
    }
  }
  return best;
}

}  // namespace bitfleet::coordinator

// Which replica serves a new request (DESIGN.md §3 step 3): the one where it would be done
// soonest, estimated in prefill-token equivalents as
//
//   cost = uncached prompt tokens      (prompt minus the prefix that replica already caches)
//        + pending prefill tokens      (work queued ahead of it there)
//        + sequences × per_sequence_cost   (each running or waiting sequence takes a share
//                                           of every step)
//
// so a long cached prefix attracts the request until the holder's queue outweighs the saving.
// Ties go to the lower replica index. Pure function of its inputs; no state, no locking.
#pragma once

#include <cstdint>
#include <span>

namespace bitfleet::coordinator {

struct RouterOptions {
  // Prefill-token equivalent of one sequence already on a replica.
  double per_sequence_cost = 16.0;
};

// What the router knows about one replica for one request.
struct ReplicaCandidate {
  bool healthy = false;
  bool fits = false;               // the request fits the replica's whole pool
  int64_t prompt_tokens = 0;       // of the request
  int64_t cached_tokens = 0;       // of the prompt, in this replica's prefix registry
  int64_t pending_prefill_tokens = 0;
  int32_t sequences = 0;           // running + waiting
};

double RouteCost(const ReplicaCandidate& candidate, const RouterOptions& options);

// Index of the replica to use; -1 when no candidate is healthy and fits.
int PickReplica(std::span<const ReplicaCandidate> candidates, const RouterOptions& options);

}  // namespace bitfleet::coordinator

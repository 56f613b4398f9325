// Fault-injection hook for tests of group failure (DESIGN.md §7, §10): a tensor-parallel rank
// that dies or hangs mid-run must make its peers fail within a bounded time, never hang them.
//
// BITFLEET_FAULT_INJECT="RANK:STEP:ACTION" makes rank RANK, when it starts its STEP-th model
// step (counting from 0), either exit at once with status 3 without any MPI shutdown ("exit":
// a crashed process), stop taking part in collectives forever ("hang": a stuck step while the
// process's other threads run on), stop the whole process with SIGSTOP ("freeze": no thread
// runs, as a process stopped by a debugger or a frozen VM), or fail that step and every later
// one with INTERNAL ("error": a device that broke, as after a sticky CUDA error). The other ranks and every other process are unaffected. Unset or empty:
// no effect. Read once when a runner is created; a malformed value is INVALID_ARGUMENT (so a
// typo cannot silently disable a test).
#pragma once

#include <cstdint>

#include "core/status.h"

namespace bitfleet::worker {

inline constexpr char kFaultInjectEnv[] = "BITFLEET_FAULT_INJECT";

class FaultInjector {
 public:
  enum class Action { kNone, kExit, kHang, kFreeze, kError };

  // Parses `spec` ("RANK:STEP:ACTION"; empty: none) for the process of rank `rank`.
  static StatusOr<FaultInjector> Parse(const char* spec, int rank);
  // Parses $BITFLEET_FAULT_INJECT.
  static StatusOr<FaultInjector> FromEnv(int rank);

  // Called at the start of every step; fires the fault at the configured step: INTERNAL from
  // then on for "error" (the step must not run), OK otherwise. Not thread-safe (one runner's
  // steps are sequential).
  Status BeforeStep();

  Action action() const { return action_; }
  int64_t step() const { return step_; }

 private:
  Action action_ = Action::kNone;
  int rank_ = 0;
  int64_t step_ = 0;
  int64_t steps_seen_ = 0;
};

}  // namespace bitfleet::worker

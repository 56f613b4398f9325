#include "worker/fault_injection.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/logging.h"

namespace bitfleet::worker {

StatusOr<FaultInjector> FaultInjector::Parse(const char* spec, int rank) {
  FaultInjector injector;
  injector.rank_ = rank;
  if (spec == nullptr || spec[0] == '\0') return injector;
  const std::string text(spec);
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  int target_rank = 0;
  int64_t step = 0;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &target_rank) || !absl::SimpleAtoi(parts[1], &step) ||
      target_rank < 0 || step < 0 ||
      (parts[2] != "exit" && parts[2] != "hang" && parts[2] != "freeze" && parts[2] != "error")) {
    return absl::InvalidArgumentError(absl::StrCat(
        kFaultInjectEnv, "='", text, "': expected RANK:STEP:exit, RANK:STEP:hang, RANK:STEP:freeze or RANK:STEP:error"));
  }
  if (target_rank != rank) return injector;
  if (parts[2] == "exit") {
    injector.action_ = Action::kExit;
  } else if (parts[2] == "hang") {
    injector.action_ = Action::kHang;
  } else if (parts[2] == "freeze") {
    injector.action_ = Action::kFreeze;
  } else {
    injector.action_ = Action::kError;
  }
  injector.step_ = step;
  Logger("worker")->warn("fault injection armed: rank {} will {} at step {}", rank, parts[2], step);
  return injector;
}

StatusOr<FaultInjector> FaultInjector::FromEnv(int rank) { return Parse(std::getenv(kFaultInjectEnv), rank); }

Status FaultInjector::BeforeStep() {
  const int64_t step = steps_seen_++;
  if (action_ == Action::kError && step >= step_) {
    if (step == step_) Logger("worker")->error("fault injection: rank {} fails from step {} on", rank_, step);
    return absl::InternalError(absl::StrCat("fault injection: rank ", rank_, " fails step ", step));
  }
  if (action_ == Action::kNone || step != step_) return absl::OkStatus();
  if (action_ == Action::kExit) {
    Logger("worker")->error("fault injection: rank {} exits at step {}", rank_, step);
    FlushLogsAndExit(3);
  }
  if (action_ == Action::kFreeze) {
    Logger("worker")->error("fault injection: rank {} freezes at step {}", rank_, step);
    Logger("worker")->flush();
    raise(SIGSTOP);  // every thread stops; a SIGCONT would resume this step
    return absl::OkStatus();
  }
  Logger("worker")->error("fault injection: rank {} hangs at step {}", rank_, step);
  Logger("worker")->flush();
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace bitfleet::worker

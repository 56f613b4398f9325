#include "coordinator/inprocess_executor.h"

#include <algorithm>
#include <string>

#include "core/logging.h"

namespace bitfleet::coordinator {

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

InProcessExecutor::InProcessExecutor(std::unique_ptr<worker::StepRunner> runner,
                                     std::chrono::milliseconds step_timeout)
    : runner_(std::move(runner)),
      step_executor_(*runner_),
      kv_blocks_(runner_->kv_blocks()),
      kv_block_size_(runner_->kv_block_size()),
      max_step_tokens_(runner_->options().max_step_tokens),
      max_step_sequences_(std::min(runner_->options().max_step_sequences, runner_->options().max_logit_rows)),
      max_logit_rows_(runner_->options().max_logit_rows),
      step_timeout_(step_timeout) {}

bool InProcessExecutor::stuck() const {
  const int64_t started = step_started_ns_.load();
  return step_timeout_.count() > 0 && started != 0 &&
         NowNs() - started > std::chrono::duration_cast<std::chrono::nanoseconds>(step_timeout_).count();
}

StatusOr<StepResult> InProcessExecutor::NextInjectedFailure() {
  std::lock_guard<std::mutex> lock(fault_mu_);
  if (failures_left_ == 0) return StepResult{};
  --failures_left_;
  return failure_;
}

void InProcessExecutor::FailNextSteps(int n, Status status) {
  std::lock_guard<std::mutex> lock(fault_mu_);
  failures_left_ = n;
  failure_ = std::move(status);
}

StatusOr<StepResult> InProcessExecutor::Execute(const StepPlan& plan) {
  if (!healthy_.load()) return absl::UnavailableError("in-process replica is marked unhealthy");
  StatusOr<StepResult> result = NextInjectedFailure();
  if (result.ok()) {
    step_started_ns_.store(NowNs());
    result = step_executor_.Execute(plan);
    step_started_ns_.store(0);
  }
  if (!result.ok()) {
    const absl::StatusCode code = result.status().code();
    if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kResourceExhausted) {
      healthy_.store(false);
      Logger("coordinator")->error("the replica in this process failed and does not restart: {}",
                                   std::string(result.status().message()));
    }
    return result;
  }
  steps_.fetch_add(1);
  int64_t tokens = 0;
  for (const SequencePlan& seq : plan.sequences) tokens += static_cast<int64_t>(seq.tokens.size());
  tokens_.fetch_add(tokens);
  return result;
}

}  // namespace bitfleet::coordinator

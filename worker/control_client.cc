#include "worker/control_client.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace bitfleet::worker {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kRetryDelay{300};

bool IsPlanRejection(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kResourceExhausted;
}

}  // namespace

struct ControlClient::Session {
  std::shared_ptr<grpc::Channel> channel;
  grpc::ClientContext context;
  std::unique_ptr<v1::Control::Stub> stub;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{5000};
  std::chrono::milliseconds step_timeout{0};  // 0: not announced

  std::mutex write_mu;  // one writer at a time: results (main thread) and heartbeats
  bool Write(const v1::WorkerMessage& message) {
    std::lock_guard lock(write_mu);
    return stream->Write(message);
  }

  // Reader -> executing thread.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<v1::StepPlan> plans;
  bool ended = false;     // the stream's read side ended
  bool shutdown = false;  // the coordinator asked us to exit
  bool stopping = false;  // Serve is finishing: helper threads exit
  bool coordinator_silent = false;
  std::string shutdown_reason;
  Clock::time_point last_heard = Clock::now();
  std::atomic<uint64_t> last_step_done{0};
  // When the step in progress started (steady clock, ns since its epoch); 0 between steps.
  std::atomic<int64_t> step_started_ns{0};
};

ControlClient::ControlClient(ControlClientOptions options) : options_(std::move(options)) {}

ControlClient::~ControlClient() = default;

void ControlClient::Stop() {
  stop_.store(true);
  std::lock_guard lock(session_mu_);
  if (active_context_ != nullptr) active_context_->TryCancel();
}

StatusOr<std::unique_ptr<ControlClient::Session>> ControlClient::Register() {
  auto log = Logger("worker");
  const Clock::time_point deadline = Clock::now() + options_.connect_timeout;
  bool logged_wait = false;
  while (true) {
    if (stop_.load()) return absl::CancelledError("stopped before registering");
    auto session = std::make_unique<Session>();
    // A fresh channel per attempt: the coordinator may not be up yet, and a channel whose first
    // connects were refused can sit in gRPC's reconnect backoff (or a stale handshake) for
    // seconds after the port opens.
    session->channel = grpc::CreateChannel(options_.coordinator, grpc::InsecureChannelCredentials());
    session->stub = v1::Control::NewStub(session->channel);
    {
      // Stop() sets stop_ before it takes this lock: either it sees this context and cancels
      // it, or this check sees stop_.
      std::lock_guard lock(session_mu_);
      if (stop_.load()) return absl::CancelledError("stopped before registering");
      active_context_ = &session->context;
    }
    session->stream = session->stub->Connect(&session->context);
    v1::WorkerMessage hello;
    *hello.mutable_registration() = options_.registration;
    v1::CoordinatorMessage reply;
    // The answer must come by the connect deadline: a coordinator that accepts the stream but
    // never answers (wedged, restarting) would otherwise hold this read forever.
    std::mutex answer_mu;
    std::condition_variable answer_cv;
    bool replied = false;
    bool timed_out = false;  // the timer cancelled the stream (an answer read just before is void)
    std::thread timer([&] {
      std::unique_lock lock(answer_mu);
      if (!answer_cv.wait_until(lock, deadline, [&] { return replied; })) {
        timed_out = true;
        session->context.TryCancel();
      }
    });
    const bool read = session->stream->Write(hello) && session->stream->Read(&reply);
    {
      std::lock_guard lock(answer_mu);
      replied = true;
    }
    answer_cv.notify_one();
    timer.join();
    const bool answered = read && !timed_out;
    if (answered && reply.has_registered()) {
      if (reply.registered().heartbeat_interval_ms() > 0) {
        session->heartbeat_interval = std::chrono::milliseconds(reply.registered().heartbeat_interval_ms());
      }
      session->step_timeout = std::chrono::milliseconds(reply.registered().step_timeout_ms());
      if (reply.registered().heartbeat_timeout_ms() > 0) {
        session->heartbeat_timeout = std::chrono::milliseconds(reply.registered().heartbeat_timeout_ms());
      }
      return session;
    }
    if (answered) session->context.TryCancel();  // a reply other than Registered: do not wait for more
    Status status = coordinator::FromGrpcStatus(session->stream->Finish());
    {
      std::lock_guard lock(session_mu_);
      active_context_ = nullptr;
    }
    if (status.ok() || status.code() == absl::StatusCode::kCancelled) {
      status = stop_.load() ? absl::CancelledError("stopped before registering")
                            : absl::UnavailableError("the coordinator ended the stream without registering us");
    }
    if (status.code() != absl::StatusCode::kUnavailable) {
      return Status(status.code(), absl::StrCat("registration refused by ", options_.coordinator, ": ",
                                                std::string(status.message())));
    }
    if (Clock::now() >= deadline) {
      return absl::UnavailableError(absl::StrCat("could not register with ", options_.coordinator, " within ",
                                                 options_.connect_timeout.count(),
                                                 " ms: ", std::string(status.message())));
    }
    if (!logged_wait) {
      log->info("waiting for the coordinator at {}: {}", options_.coordinator, std::string(status.message()));
      logged_wait = true;
    }
    std::this_thread::sleep_for(kRetryDelay);
  }
}

Status ControlClient::Run(const StepFunction& step) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Register());
  const v1::Register& r = options_.registration;
  Logger("worker")->info("registered with {} as replica {} rank {}/{}", options_.coordinator, r.replica(), r.rank(),
                         r.world_size());
  Status status = Serve(*session, step);
  {
    std::lock_guard lock(session_mu_);
    active_context_ = nullptr;
  }
  return status;
}

Status ControlClient::Serve(Session& s, const StepFunction& step) {
  std::thread reader([&s] {
    v1::CoordinatorMessage message;
    while (s.stream->Read(&message)) {
      std::lock_guard lock(s.mu);
      s.last_heard = Clock::now();
      if (message.has_plan()) {
        s.plans.push_back(std::move(*message.mutable_plan()));
      } else if (message.has_shutdown()) {
        s.shutdown = true;
        s.shutdown_reason = message.shutdown().reason();
      }
      s.cv.notify_all();
    }
    std::lock_guard lock(s.mu);
    s.ended = true;
    s.cv.notify_all();
  });
  std::thread heartbeat([&s] {
    std::unique_lock lock(s.mu);
    while (!s.cv.wait_for(lock, s.heartbeat_interval, [&s] { return s.stopping || s.ended; })) {
      if (Clock::now() - s.last_heard > s.heartbeat_timeout) {
        s.coordinator_silent = true;
        s.context.TryCancel();
        return;
      }
      lock.unlock();
      v1::WorkerMessage beat;
      beat.mutable_heartbeat()->set_last_step_id(s.last_step_done.load());
      s.Write(beat);  // a failed write shows up as the reader's end
      lock.lock();
    }
  });

  // Runs until Serve finishes, even after the stream has ended: the stuck step outlives it.
  std::thread watchdog([this, &s] {
    if (!options_.on_stuck_step || s.step_timeout.count() <= 0) return;
    const Clock::duration limit = s.step_timeout + s.heartbeat_timeout;
    const auto poll = std::max(std::chrono::milliseconds(10), std::min(s.heartbeat_interval, s.step_timeout / 4));
    std::unique_lock lock(s.mu);
    while (!s.cv.wait_for(lock, poll, [&s] { return s.stopping; })) {
      const int64_t started = s.step_started_ns.load();
      if (started == 0) continue;
      const Clock::duration running = Clock::now().time_since_epoch() - std::chrono::nanoseconds(started);
      if (running <= limit) continue;
      lock.unlock();
      options_.on_stuck_step(std::chrono::duration_cast<std::chrono::milliseconds>(running));
      return;
    }
  });

  Status outcome = absl::OkStatus();
  bool step_failed = false;
  while (true) {
    v1::StepPlan wire_plan;
    {
      std::unique_lock lock(s.mu);
      s.cv.wait(lock, [&] { return !s.plans.empty() || s.ended || s.shutdown || stop_.load(); });
      if (s.shutdown) {
        Logger("worker")->info("coordinator asked us to exit: {}", s.shutdown_reason);
        break;
      }
      if (stop_.load()) {
        outcome = absl::CancelledError("worker stopped");
        break;
      }
      if (s.plans.empty()) {  // the stream ended
        outcome = s.coordinator_silent
                      ? absl::UnavailableError(absl::StrCat("the coordinator was silent for longer than ",
                                                            s.heartbeat_timeout.count(), " ms"))
                      : absl::UnavailableError("the control stream ended");
        break;
      }
      wire_plan = std::move(s.plans.front());
      s.plans.pop_front();
    }
    const coordinator::StepPlan plan = coordinator::FromProto(wire_plan);
    s.step_started_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
    StatusOr<coordinator::StepResult> result = step(plan);
    s.step_started_ns.store(0);
    v1::WorkerMessage answer;
    if (result.ok()) {
      coordinator::ToProto(*result, answer.mutable_result());
    } else {
      coordinator::ErrorToProto(plan.step_id, result.status(), answer.mutable_result());
    }
    s.Write(answer);
    s.last_step_done.store(plan.step_id);
    if (!result.ok() && !IsPlanRejection(result.status().code())) {
      outcome = result.status();
      step_failed = true;
      break;
    }
  }

  {
    std::lock_guard lock(s.mu);
    s.stopping = true;
    s.cv.notify_all();
  }
  heartbeat.join();
  watchdog.join();
  // A clean exit, or a failed step whose error the coordinator should read before the stream
  // ends: half-close and let the coordinator end the stream (bounded: it may be gone).
  const bool half_close = outcome.ok() || step_failed;
  bool cancel = !half_close;
  if (half_close) {
    {
      std::lock_guard lock(s.write_mu);
      s.stream->WritesDone();
    }
    std::unique_lock lock(s.mu);
    cancel = !s.cv.wait_for(lock, s.heartbeat_timeout, [&s] { return s.ended; });
  }
  if (cancel) s.context.TryCancel();
  reader.join();
  const Status end = coordinator::FromGrpcStatus(s.stream->Finish());
  if (outcome.code() == absl::StatusCode::kUnavailable && !end.ok() && end.code() != absl::StatusCode::kCancelled) {
    // The coordinator said why it ended the stream (e.g. another rank of the group failed).
    outcome = absl::UnavailableError(absl::StrCat(std::string(outcome.message()), ": ", std::string(end.message())));
  }
  return outcome;
}

}  // namespace bitfleet::worker

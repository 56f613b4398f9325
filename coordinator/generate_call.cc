#include "coordinator/generate_call.h"

#include <condition_variable>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "coordinator/stop_matcher.h"
#include "core/logging.h"
#include "core/spin_wait.h"
#include "model/tokenizer/incremental_decoder.h"

namespace bitfleet::coordinator {
namespace {

// After a cancel, how long Run waits for the scheduler's final event before giving up.
constexpr std::chrono::seconds kCancelGrace{10};

// A long prompt's log probabilities (20 alternatives: ~350 bytes a token) are spread over
// messages of at most this many entries, well under gRPC clients' default 4 MiB message limit.
constexpr int kPromptLogprobsPerMessage = 1024;

v1::FinishReason ToProto(FinishReason reason, bool stop_string) {
  if (stop_string) return v1::FINISH_REASON_STOP_STRING;
  return reason == FinishReason::kStop ? v1::FINISH_REASON_END_OF_SEQUENCE : v1::FINISH_REASON_LENGTH;
}

}  // namespace

// Constructing and reading a std::random_device costs ~20 us (measured on the 2-vCPU development
// VM), which every request paid before its first token when it was made per call.
uint64_t RandomSeed() {
  thread_local std::mt19937_64 engine = [] {
    std::random_device device;
    std::seed_seq seeds{device(), device(), device(), device()};
    return std::mt19937_64(seeds);
  }();
  return engine();
}

RequestIds::RequestIds() : prefix_(RandomSeed() & 0xffffffu) {}

std::string RequestIds::Next(const char* kind) {
  return absl::StrFormat("%s-%06x-%d", kind, prefix_, next_.fetch_add(1));
}

StatusOr<Tenant> AuthorizeCall(const ApiKeys* keys, std::string_view authorization, const std::string& peer,
                               const char* api, MetricsRegistry& metrics) {
  if (keys == nullptr) return AnonymousTenant();
  StatusOr<Tenant> tenant = keys->Authenticate(authorization);
  if (!tenant.ok()) {
    Logger("api")->debug("unauthenticated {} call from {}: {}", api, peer, tenant.status().ToString());
    metrics
        .AddCounter("bitfleet_api_unauthenticated_total", "Calls refused for a missing or unknown API key",
                    {{"api", api}})
        ->Increment();
  }
  return tenant;
}

// A request's events, handed from the scheduler's sink (which must not block) to Run's thread.
struct GenerateCall::EventQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<RequestEvent> events;

  void Push(const RequestEvent& event) {
    {
      std::lock_guard lock(mu);
      events.push_back(event);
    }
    cv.notify_one();
  }
  // Waits up to `timeout` for events and takes them all.
  std::vector<RequestEvent> Take(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    const auto any = [this] { return !events.empty(); };
    if (!SpinUntil(lock, any)) cv.wait_for(lock, timeout, any);
    return std::exchange(events, {});
  }
};

GenerateCall::GenerateCall(Scheduler& scheduler, const tokenizer::Tokenizer& tokenizer, GenerateCallOptions options)
    : scheduler_(scheduler), tokenizer_(tokenizer), options_(options), queue_(std::make_shared<EventQueue>()) {}

StatusOr<std::unique_ptr<GenerateCall>> GenerateCall::Submit(Scheduler& scheduler,
                                                             const tokenizer::Tokenizer& tokenizer,
                                                             ParsedGenerate parsed, const Tenant& tenant,
                                                             GenerateCallOptions options) {
  std::unique_ptr<GenerateCall> call(new GenerateCall(scheduler, tokenizer, options));
  GenerateRequest& request = parsed.request;
  request.tenant_id = tenant.name;
  request.tenant_salt = tenant.cache_salt;
  call->request_id_ = request.request_id;
  call->prompt_tokens_ = request.prompt.size();
  if (request.prompt_logprobs) call->prompt_ = request.prompt;
  call->seed_ = request.sampling.seed;
  call->stop_ = std::move(parsed.stop);
  request.sink = [queue = call->queue_](const RequestEvent& event) { queue->Push(event); };
  StatusOr<RequestId> id = scheduler.Submit(std::move(request));
  if (!id.ok()) {
    call->ended_ = true;
    Logger("api")->debug("{}: not accepted: {}", call->request_id_, id.status().ToString());
    return id.status();
  }
  call->id_ = *id;
  call->submitted_ = Clock::now();
  return call;
}

GenerateCall::~GenerateCall() {
  if (!ended_) Cancel(FinishReason::kCancelled);
}

void GenerateCall::MarkHeadersSent() { headers_sent_ = Clock::now(); }

void GenerateCall::Cancel(FinishReason reason) {
  if (cancelled_at_) return;
  cancelled_at_ = Clock::now();
  scheduler_.Cancel(id_, reason).IgnoreError();  // NOT_FOUND: it finished meanwhile
}

std::string TokenBytes(const tokenizer::Tokenizer& tokenizer, int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= tokenizer.size()) return std::string();
  return std::string(tokenizer.pieces().Piece(id, /*render_special=*/true));
}

void GenerateCall::FillLogprobs(int32_t token, float logprob, std::span<const TokenLogprob> top,
                                v1::TokenLogprobs* out) const {
  out->set_logprob(logprob);
  out->set_token(TokenBytes(tokenizer_, token));
  out->set_token_id(token);
  for (const TokenLogprob& t : top) {
    v1::TopLogprob* entry = out->add_top();
    entry->set_token_id(t.token);
    entry->set_logprob(t.logprob);
    entry->set_token(TokenBytes(tokenizer_, t.token));
  }
}

Status GenerateCall::Run(GenerateOutput& output) {
  auto log = Logger("api");
  const Clock::time_point start = options_.parsed;
  std::optional<Clock::time_point> first_event;
  std::optional<Clock::time_point> first_written;

  tokenizer::DecodeOptions decode;
  decode.strip_leading_space = false;  // the completion continues the prompt
  tokenizer::IncrementalDecoder decoder(tokenizer_, decode);
  StopMatcher stop(std::move(stop_));
  bool first_message = true;
  bool client_gone = false;
  // Tokens streamed: all of them, or those up to the one completing a stop string. The usage of a
  // stop-string finish counts these, not the scheduler's count, which includes tokens generated
  // after the stop appeared (a step in flight, kept speculative drafts) that nobody received.
  int64_t tokens_streamed = 0;
  // The final message's usage (the cached prompt tokens come with the scheduler's finish only).
  auto set_usage = [&](v1::GenerateResponse& message, int64_t completion_tokens, int64_t cached_prompt_tokens) {
    v1::Usage* usage = message.mutable_usage();
    usage->set_prompt_tokens(static_cast<uint32_t>(prompt_tokens_));
    usage->set_completion_tokens(static_cast<uint32_t>(completion_tokens));
    usage->set_cached_prompt_tokens(static_cast<uint32_t>(cached_prompt_tokens));
    usage->set_seed(seed_);
  };
  auto send = [&](v1::GenerateResponse& message) {
    if (client_gone) return;
    if (first_message) {
      message.set_request_id(request_id_);
      first_message = false;
    }
    if (!output.Write(message)) {
      client_gone = true;
      Cancel(FinishReason::kCancelled);
    }
    if (!first_written) first_written = Clock::now();
  };
  const auto gone_status = [&] { return absl::CancelledError("the client went away"); };

  while (true) {
    std::vector<RequestEvent> events = queue_->Take(options_.cancel_poll);
    if (!first_event && !events.empty()) first_event = Clock::now();
    if (!cancelled_at_ && output.ClientGone()) {
      client_gone = true;
      Cancel(FinishReason::kCancelled);
    }
    v1::GenerateResponse message;
    const RequestEvent* finished = nullptr;
    for (const RequestEvent& event : events) {
      if (event.kind == RequestEvent::Kind::kFinished) {
        finished = &event;
        break;
      }
      if (event.kind == RequestEvent::Kind::kPromptLogprobs) {
        for (size_t j = 0; j < event.prompt_logprobs.size(); ++j) {
          const size_t position = static_cast<size_t>(event.prompt_position) + j;
          const ScoredToken& scored = event.prompt_logprobs[j];
          const int32_t token = position < prompt_.size() ? prompt_[position] : -1;
          FillLogprobs(token, scored.logprob, scored.top_logprobs, message.add_prompt_logprobs());
          if (message.prompt_logprobs_size() == kPromptLogprobsPerMessage) {
            send(message);
            message.Clear();
          }
        }
        continue;
      }
      if (stop.matched()) continue;  // tokens already in flight when the stop string appeared
      ++tokens_streamed;
      message.add_token_ids(event.token);
      if (event.has_logprobs) FillLogprobs(event.token, event.logprob, event.top_logprobs, message.add_logprobs());
      StatusOr<std::string> piece = decoder.Push(event.token);
      if (piece.ok()) message.mutable_text()->append(stop.Push(*piece));
      if (stop.matched()) Cancel(FinishReason::kStop);
    }
    const bool any = message.token_ids_size() > 0 || message.prompt_logprobs_size() > 0;
    if (finished == nullptr) {
      if (any) send(message);
      if (cancelled_at_ && Clock::now() - *cancelled_at_ > kCancelGrace) {
        ended_ = true;
        if (stop.matched() && !client_gone) {
          // The answer is complete; the scheduler is still in a long step (a large prefill on a
          // slow machine) and ends the request after it. Finish here with the usage known here
          // (the cached prompt tokens only come with the scheduler's finish).
          log->warn("{}: finished at its stop string {} s before the scheduler's step ended", request_id_,
                    kCancelGrace.count());
          v1::GenerateResponse last;
          last.set_finish_reason(v1::FINISH_REASON_STOP_STRING);
          set_usage(last, tokens_streamed, 0);
          send(last);
          return client_gone ? gone_status() : absl::OkStatus();
        }
        log->error("{}: the scheduler did not finish the request {} s after its cancel", request_id_,
                   kCancelGrace.count());
        return absl::CancelledError("request cancelled");
      }
      continue;
    }

    ended_ = true;
    const RequestEvent& end = *finished;
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (!stop.matched() && !end.status.ok()) {
      if (any) send(message);
      log->debug("{}: {} after {} tokens in {:.3f} s", request_id_, end.status.ToString(), end.usage.completion_tokens,
                 seconds);
      return end.status;
    }
    if (!stop.matched()) {
      message.mutable_text()->append(stop.Push(decoder.Finish()));
      message.mutable_text()->append(stop.Flush());
    }
    message.set_finish_reason(ToProto(end.finish_reason, stop.matched()));
    set_usage(message, stop.matched() ? tokens_streamed : end.usage.completion_tokens, end.usage.cached_prompt_tokens);
    send(message);
    log->debug("{}: {} prompt + {} generated tokens in {:.3f} s, finish {}", request_id_, prompt_tokens_,
               end.usage.completion_tokens, seconds, v1::FinishReason_Name(message.finish_reason()));
    if (first_event && first_written && headers_sent_ && log->should_log(spdlog::level::debug)) {
      const auto us = [](Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); };
      log->debug("{}: first token written {:.0f} us after the call arrived: parse {:.0f}, submit {:.0f}, headers "
                 "{:.0f}, scheduler and workers {:.0f}, write {:.0f} us ({} prompt tokens, {} cached)",
                 request_id_, us(*first_written - options_.received), us(options_.parsed - options_.received),
                 us(submitted_ - options_.parsed), us(*headers_sent_ - submitted_), us(*first_event - *headers_sent_),
                 us(*first_written - *first_event), prompt_tokens_, end.usage.cached_prompt_tokens);
    }
    return client_gone ? gone_status() : absl::OkStatus();
  }
}

}  // namespace bitfleet::coordinator

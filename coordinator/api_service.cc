#include "coordinator/api_service.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <utility>

#include "absl/strings/str_format.h"
#include "coordinator/step_codec.h"
#include "coordinator/stop_matcher.h"
#include "core/logging.h"
#include "core/spin_wait.h"
#include "grpc/support/time.h"
#include "model/tokenizer/incremental_decoder.h"

namespace bitfleet::coordinator {
namespace {

// After a cancel, how long Generate waits for the scheduler's final event before giving up.
constexpr std::chrono::seconds kCancelGrace{10};

// A request's events, handed from the scheduler's sink (which must not block) to the call's
// thread.
struct EventQueue {
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

// The request's deadline on the steady clock, from gRPC's own time representation: a deadline
// more than ten years away (a client's "no timeout" as a huge duration, past what a
// nanosecond time point holds) counts as none.
Clock::time_point DeadlineOf(const grpc::ServerContext& context) {
  const gpr_timespec raw = context.raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) == 0) return Clock::time_point::max();
  const gpr_timespec left = gpr_time_sub(raw, gpr_now(raw.clock_type));
  constexpr int64_t kTenYears = int64_t{10} * 365 * 24 * 3600;
  if (left.tv_sec > kTenYears) return Clock::time_point::max();
  return Clock::now() + std::chrono::seconds(left.tv_sec) + std::chrono::nanoseconds(left.tv_nsec);
}

v1::FinishReason ToProto(FinishReason reason, bool stop_string) {
  if (stop_string) return v1::FINISH_REASON_STOP_STRING;
  return reason == FinishReason::kStop ? v1::FINISH_REASON_END_OF_SEQUENCE : v1::FINISH_REASON_LENGTH;
}

// Seeds of requests that name none. One std::random_device per thread, once: constructing and
// reading one costs ~20 us (measured on the 2-vCPU development VM), which every Generate paid
// before its first token.
uint64_t RandomU64() {
  thread_local std::mt19937_64 engine = [] {
    std::random_device device;
    std::seed_seq seeds{device(), device(), device(), device()};
    return std::mt19937_64(seeds);
  }();
  return engine();
}

}  // namespace

ApiService::ApiService(ApiServiceOptions options, const tokenizer::Tokenizer& tokenizer, Scheduler& scheduler,
                       MetricsRegistry& metrics, std::function<int()> ready_replicas)
    : options_(std::move(options)),
      tokenizer_(tokenizer),
      scheduler_(scheduler),
      metrics_(metrics),
      ready_replicas_(std::move(ready_replicas)),
      chat_(ChatPrompt::FromTemplate(options_.chat_template)),
      id_prefix_(RandomU64() & 0xffffffu) {}

std::string ApiService::NewRequestId() { return absl::StrFormat("req-%06x-%d", id_prefix_, next_id_.fetch_add(1)); }

void ApiService::CountGenerate(const Status& status) {
  metrics_
      .AddCounter("bitfleet_api_generate_total", "Generate calls by final status code",
                  {{"code", absl::StatusCodeToString(status.code())}})
      ->Increment();
}

grpc::Status ApiService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                  grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const Clock::time_point received = Clock::now();
  StatusOr<ParsedGenerate> parsed =
      ParseGenerateRequest(*request, options_.limits, tokenizer_, chat_.get(), RandomU64());
  if (!parsed.ok()) {
    Logger("api")->debug("rejected Generate from {}: {}", context->peer(), parsed.status().ToString());
    CountGenerate(parsed.status());
    return ToGrpcStatus(parsed.status());
  }
  const std::string request_id = NewRequestId();
  const Status status = Stream(context, *std::move(parsed), request_id, writer, received, Clock::now());
  CountGenerate(status);
  return ToGrpcStatus(status);
}

Status ApiService::Stream(grpc::ServerContext* context, ParsedGenerate parsed, const std::string& request_id,
                          grpc::ServerWriter<v1::GenerateResponse>* writer, Clock::time_point received,
                          Clock::time_point parsed_at) {
  auto log = Logger("api");
  const Clock::time_point start = parsed_at;
  auto queue = std::make_shared<EventQueue>();
  GenerateRequest& request = parsed.request;
  const size_t prompt_tokens = request.prompt.size();
  const uint64_t seed = request.sampling.seed;
  request.request_id = request_id;
  // No authentication yet: every client is the anonymous tenant, whose requests share prefix
  // blocks with each other only (DESIGN.md §6).
  request.tenant_id = "anonymous";
  request.deadline = DeadlineOf(*context);
  request.sink = [queue](const RequestEvent& event) { queue->Push(event); };
  StatusOr<RequestId> id = scheduler_.Submit(std::move(request));
  if (!id.ok()) {
    log->debug("{}: not accepted: {}", request_id, id.status().ToString());
    return id.status();
  }
  const Clock::time_point submitted = Clock::now();
  // The response headers go out while the prompt is computed, so the first token's write
  // carries the token alone.
  writer->SendInitialMetadata();
  const Clock::time_point headers_sent = Clock::now();
  // When the first token's event arrived and when its message was written (the debug log's
  // first-token timeline: where a TTFT goes on this side of the network).
  std::optional<Clock::time_point> first_event;
  std::optional<Clock::time_point> first_written;

  tokenizer::DecodeOptions decode;
  decode.strip_leading_space = false;  // the completion continues the prompt
  tokenizer::IncrementalDecoder decoder(tokenizer_, decode);
  StopMatcher stop(std::move(parsed.stop));
  bool first_message = true;
  bool client_gone = false;
  int64_t tokens_seen = 0;  // token events, streamed or not (the usage of a finish decided here)
  std::optional<Clock::time_point> cancelled_at;
  auto cancel = [&](FinishReason reason) {
    if (cancelled_at) return;
    cancelled_at = Clock::now();
    scheduler_.Cancel(*id, reason).IgnoreError();  // NOT_FOUND: it finished meanwhile
  };
  // The final message's usage (the cached prompt tokens come with the scheduler's finish only).
  auto set_usage = [&](v1::GenerateResponse& message, int64_t completion_tokens, int64_t cached_prompt_tokens) {
    v1::Usage* usage = message.mutable_usage();
    usage->set_prompt_tokens(static_cast<uint32_t>(prompt_tokens));
    usage->set_completion_tokens(static_cast<uint32_t>(completion_tokens));
    usage->set_cached_prompt_tokens(static_cast<uint32_t>(cached_prompt_tokens));
    usage->set_seed(seed);
  };
  auto send = [&](v1::GenerateResponse& message) {
    if (client_gone) return;
    if (first_message) {
      message.set_request_id(request_id);
      first_message = false;
    }
    if (!writer->Write(message)) {
      client_gone = true;
      cancel(FinishReason::kCancelled);
    }
    if (!first_written) first_written = Clock::now();
  };

  while (true) {
    std::vector<RequestEvent> events = queue->Take(options_.cancel_poll);
    if (!first_event && !events.empty()) first_event = Clock::now();
    if (!cancelled_at && context->IsCancelled()) {
      client_gone = true;
      cancel(FinishReason::kCancelled);
    }
    v1::GenerateResponse message;
    const RequestEvent* finished = nullptr;
    for (const RequestEvent& event : events) {
      if (event.kind == RequestEvent::Kind::kFinished) {
        finished = &event;
        break;
      }
      ++tokens_seen;
      if (stop.matched()) continue;  // tokens already in flight when the stop string appeared
      message.add_token_ids(event.token);
      StatusOr<std::string> piece = decoder.Push(event.token);
      if (piece.ok()) message.mutable_text()->append(stop.Push(*piece));
      if (stop.matched()) cancel(FinishReason::kStop);
    }
    if (finished == nullptr) {
      if (message.token_ids_size() > 0) send(message);
      if (cancelled_at && Clock::now() - *cancelled_at > kCancelGrace) {
        if (stop.matched() && !client_gone) {
          // The answer is complete; the scheduler is still in a long step (a large prefill on a
          // slow machine) and ends the request after it. Finish here with the usage known here
          // (the cached prompt tokens only come with the scheduler's finish).
          log->warn("{}: finished at its stop string {} s before the scheduler's step ended", request_id,
                    kCancelGrace.count());
          v1::GenerateResponse last;
          last.set_finish_reason(v1::FINISH_REASON_STOP_STRING);
          set_usage(last, tokens_seen, 0);
          send(last);
          return client_gone ? absl::CancelledError("the client went away") : absl::OkStatus();
        }
        log->error("{}: the scheduler did not finish the request {} s after its cancel", request_id,
                   kCancelGrace.count());
        return absl::CancelledError("request cancelled");
      }
      continue;
    }

    const RequestEvent& end = *finished;
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (!stop.matched() && !end.status.ok()) {
      if (message.token_ids_size() > 0) send(message);
      log->debug("{}: {} after {} tokens in {:.3f} s", request_id, end.status.ToString(), end.usage.completion_tokens,
                 seconds);
      return end.status;
    }
    if (!stop.matched()) {
      message.mutable_text()->append(stop.Push(decoder.Finish()));
      message.mutable_text()->append(stop.Flush());
    }
    message.set_finish_reason(ToProto(end.finish_reason, stop.matched()));
    set_usage(message, end.usage.completion_tokens, end.usage.cached_prompt_tokens);
    send(message);
    log->debug("{}: {} prompt + {} generated tokens in {:.3f} s, finish {}", request_id, prompt_tokens,
               end.usage.completion_tokens, seconds, v1::FinishReason_Name(message.finish_reason()));
    if (first_event && first_written && log->should_log(spdlog::level::debug)) {
      const auto us = [](Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); };
      log->debug("{}: first token written {:.0f} us after the call arrived: parse {:.0f}, submit {:.0f}, headers "
                 "{:.0f}, scheduler and workers {:.0f}, write {:.0f} us ({} prompt tokens, {} cached)",
                 request_id, us(*first_written - received), us(parsed_at - received), us(submitted - parsed_at),
                 us(headers_sent - submitted), us(*first_event - headers_sent), us(*first_written - *first_event),
                 prompt_tokens, end.usage.cached_prompt_tokens);
    }
    return client_gone ? absl::CancelledError("the client went away") : absl::OkStatus();
  }
}

grpc::Status ApiService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                  v1::TokenizeResponse* response) {
  if (request->text().size() > options_.limits.max_prompt_bytes) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("text has ", request->text().size(), " bytes, limit ", options_.limits.max_prompt_bytes));
  }
  tokenizer::EncodeOptions encode;
  encode.add_special = request->has_add_special() ? request->add_special() : true;
  encode.max_input_bytes = options_.limits.max_prompt_bytes;
  StatusOr<std::vector<tokenizer::TokenId>> ids = tokenizer_.Encode(request->text(), encode);
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  response->mutable_token_ids()->Add(ids->begin(), ids->end());
  return grpc::Status::OK;
}

grpc::Status ApiService::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                                    v1::DetokenizeResponse* response) {
  const auto& ids = request->token_ids();
  StatusOr<std::string> text = tokenizer_.Decode(std::span<const int32_t>(ids.data(), ids.size()));
  if (!text.ok()) return ToGrpcStatus(absl::InvalidArgumentError(std::string(text.status().message())));
  response->set_text(*std::move(text));
  return grpc::Status::OK;
}

grpc::Status ApiService::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*, v1::ModelInfo* response) {
  response->set_name(options_.limits.model_name);
  response->set_architecture(options_.architecture);
  response->set_vocab_size(static_cast<uint32_t>(options_.limits.n_vocab));
  response->set_context_length(static_cast<uint32_t>(options_.limits.max_context));
  response->set_tensor_parallel(static_cast<uint32_t>(options_.tensor_parallel));
  response->set_replicas(static_cast<uint32_t>(options_.replicas));
  response->set_ready_replicas(static_cast<uint32_t>(ready_replicas_ ? ready_replicas_() : 0));
  for (tokenizer::TokenId id : tokenizer_.end_of_generation()) response->add_end_of_generation_ids(id);
  return grpc::Status::OK;
}

}  // namespace bitfleet::coordinator

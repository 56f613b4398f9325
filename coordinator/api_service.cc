#include "coordinator/api_service.h"

#include <memory>
#include <utility>

#include "coordinator/generate_call.h"
#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "grpc/support/time.h"

namespace bitfleet::coordinator {
namespace {

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

// A Generate call's server stream as a GenerateOutput.
class GrpcOutput final : public GenerateOutput {
 public:
  GrpcOutput(grpc::ServerContext& context, grpc::ServerWriter<v1::GenerateResponse>& writer)
      : context_(context), writer_(writer) {}
  bool Write(const v1::GenerateResponse& message) override { return writer_.Write(message); }
  bool ClientGone() override { return context_.IsCancelled(); }

 private:
  grpc::ServerContext& context_;
  grpc::ServerWriter<v1::GenerateResponse>& writer_;
};

}  // namespace

ApiService::ApiService(ApiServiceOptions options, const tokenizer::Tokenizer& tokenizer, Scheduler& scheduler,
                       MetricsRegistry& metrics, std::function<int()> ready_replicas)
    : options_(std::move(options)),
      tokenizer_(tokenizer),
      scheduler_(scheduler),
      metrics_(metrics),
      ready_replicas_(std::move(ready_replicas)) {}

StatusOr<Tenant> ApiService::Authorize(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  const std::string_view value =
      it == metadata.end() ? std::string_view() : std::string_view(it->second.data(), it->second.size());
  return AuthorizeCall(options_.keys.get(), value, context.peer(), "grpc", metrics_);
}

void ApiService::CountGenerate(const Status& status) {
  metrics_
      .AddCounter("bitfleet_api_generate_total", "Generate calls by final status code",
                  {{"code", absl::StatusCodeToString(status.code())}})
      ->Increment();
}

grpc::Status ApiService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                  grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const Clock::time_point received = Clock::now();
  StatusOr<Tenant> tenant = Authorize(*context);
  if (!tenant.ok()) {
    CountGenerate(tenant.status());
    return ToGrpcStatus(tenant.status());
  }
  StatusOr<ParsedGenerate> parsed =
      ParseGenerateRequest(*request, options_.limits, tokenizer_, options_.limits.chat.get(), RandomSeed());
  if (!parsed.ok()) {
    Logger("api")->debug("rejected Generate from {}: {}", context->peer(), parsed.status().ToString());
    CountGenerate(parsed.status());
    return ToGrpcStatus(parsed.status());
  }
  GenerateRequest& submitted = parsed->request;
  submitted.request_id = request_ids_.Next("req");
  submitted.deadline = DeadlineOf(*context);
  GenerateCallOptions call_options{options_.cancel_poll, received, Clock::now()};
  StatusOr<std::unique_ptr<GenerateCall>> call =
      GenerateCall::Submit(scheduler_, tokenizer_, *std::move(parsed), *tenant, call_options);
  Status status = call.status();
  if (call.ok()) {
    // The response headers go out while the prompt is computed, so the first token's write
    // carries the token alone.
    writer->SendInitialMetadata();
    (*call)->MarkHeadersSent();
    GrpcOutput output(*context, *writer);
    status = (*call)->Run(output);
  }
  CountGenerate(status);
  return ToGrpcStatus(status);
}

grpc::Status ApiService::Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                                  v1::TokenizeResponse* response) {
  if (StatusOr<Tenant> tenant = Authorize(*context); !tenant.ok()) return ToGrpcStatus(tenant.status());
  StatusOr<std::vector<int32_t>> ids = TokenizeText(tokenizer_, options_.limits, request->text(),
                                                    request->has_add_special() ? request->add_special() : true);
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  response->mutable_token_ids()->Add(ids->begin(), ids->end());
  return grpc::Status::OK;
}

grpc::Status ApiService::Detokenize(grpc::ServerContext* context, const v1::DetokenizeRequest* request,
                                    v1::DetokenizeResponse* response) {
  if (StatusOr<Tenant> tenant = Authorize(*context); !tenant.ok()) return ToGrpcStatus(tenant.status());
  const auto& ids = request->token_ids();
  StatusOr<std::string> text = DetokenizeIds(tokenizer_, std::span<const int32_t>(ids.data(), ids.size()));
  if (!text.ok()) return ToGrpcStatus(text.status());
  response->set_text(*std::move(text));
  return grpc::Status::OK;
}

grpc::Status ApiService::GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest*,
                                      v1::ModelInfo* response) {
  if (StatusOr<Tenant> tenant = Authorize(*context); !tenant.ok()) return ToGrpcStatus(tenant.status());
  response->set_name(options_.limits.model_name);
  response->set_architecture(options_.architecture);
  response->set_vocab_size(static_cast<uint32_t>(options_.limits.n_vocab));
  response->set_context_length(static_cast<uint32_t>(options_.limits.max_context));
  response->set_tensor_parallel(static_cast<uint32_t>(options_.tensor_parallel));
  response->set_replicas(static_cast<uint32_t>(options_.replicas));
  response->set_ready_replicas(static_cast<uint32_t>(ready_replicas_ ? ready_replicas_() : 0));
  for (int32_t id : options_.end_of_generation) response->add_end_of_generation_ids(id);
  response->set_chat(options_.limits.chat != nullptr);
  if (options_.limits.chat == nullptr) response->set_chat_unavailable(options_.limits.chat_unavailable);
  if (tokenizer_.vocab().add_bos && tokenizer_.bos() != tokenizer::kNoToken) {
    response->set_bos_token_id(tokenizer_.bos());
  }
  return grpc::Status::OK;
}

}  // namespace bitfleet::coordinator

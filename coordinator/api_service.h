// bitfleet.v1.Inference (inference.proto): the client API in front of the Scheduler
// (DESIGN.md §3, §8, §9).
//
// Generate: validates everything first (api_request.h), then runs a GenerateCall
// (generate_call.h: the scheduler's events as token ids, text deltas and stop strings, then one
// last message with the finish reason and usage). Status codes are the scheduler's, 1:1
// (DESIGN.md §9). The call's deadline becomes the request's deadline; a client that cancels or
// disconnects cancels the request, which leaves the batch and frees its KV blocks at the next
// iteration.
//
// Threading: gRPC's synchronous server runs each call on its own thread, which Generate blocks
// until its request ends. Nothing here throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bitfleet/v1/inference.grpc.pb.h"
#include "coordinator/api_auth.h"
#include "coordinator/api_request.h"
#include "coordinator/chat_prompt.h"
#include "coordinator/generate_call.h"
#include "coordinator/metrics.h"
#include "coordinator/scheduler.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {

struct ApiServiceOptions {
  ApiLimits limits;
  std::string architecture;   // for GetModelInfo
  std::vector<int32_t> end_of_generation;  // for GetModelInfo (sorted)
  int tensor_parallel = 1;
  int replicas = 1;
  // API keys every call must carry (api_auth.h); null: no authentication, every request is the
  // anonymous tenant's.
  std::shared_ptr<const ApiKeys> keys;
  // How often a waiting Generate checks whether its client went away.
  std::chrono::milliseconds cancel_poll{20};
};

class ApiService final : public v1::Inference::Service {
 public:
  // `ready_replicas` answers GetModelInfo.ready_replicas. The tokenizer, scheduler and metrics
  // registry must outlive the service.
  ApiService(ApiServiceOptions options, const tokenizer::Tokenizer& tokenizer, Scheduler& scheduler,
             MetricsRegistry& metrics, std::function<int()> ready_replicas);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

 private:
  // The caller's tenant from its "authorization" metadata (AuthorizeCall).
  StatusOr<Tenant> Authorize(const grpc::ServerContext& context);
  // Counts a finished Generate by status code.
  void CountGenerate(const Status& status);

  const ApiServiceOptions options_;
  const tokenizer::Tokenizer& tokenizer_;
  Scheduler& scheduler_;
  MetricsRegistry& metrics_;
  const std::function<int()> ready_replicas_;
  RequestIds request_ids_;
};

}  // namespace bitfleet::coordinator

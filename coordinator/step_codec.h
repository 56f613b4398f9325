// Conversions between the scheduler's plain step structs (coordinator/executor.h) and their
// wire form in control.proto, plus absl::Status <-> grpc::Status. Shared by the coordinator's
// executor client and the worker's control client, so both ends agree field by field.
//
// This library (bitfleet_rpc) depends only on core and the generated protos: the worker links
// it without pulling in the coordinator, and it has no kernels, MPI or CUDA.
#pragma once

#include "bitfleet/v1/control.pb.h"
#include "coordinator/executor.h"
#include "core/status.h"
#include "model/arch/model_config.h"
#include "grpcpp/support/status.h"

namespace bitfleet::coordinator {

void ToProto(const StepPlan& plan, v1::StepPlan* out);
StepPlan FromProto(const v1::StepPlan& plan);

void ToProto(const StepResult& result, v1::StepResult* out);
// A failed step: only the step id and the error's code and message.
void ErrorToProto(uint64_t step_id, const Status& error, v1::StepResult* out);
// The error a worker reported (OK when error_code is 0), then the decoded sequences.
Status StatusOfResult(const v1::StepResult& result);
StepResult FromProto(const v1::StepResult& result);

// What a process loaded, for the registration check (control.proto ModelIdentity).
v1::ModelIdentity ModelIdentityOf(const model::ModelConfig& config, uint64_t file_bytes);

// absl and gRPC share the google.rpc.Code numbering, so codes map 1:1 (DESIGN.md §9).
grpc::Status ToGrpcStatus(const Status& status);
Status FromGrpcStatus(const grpc::Status& status);
// A status code received as a number; anything outside the known range becomes UNKNOWN.
absl::StatusCode StatusCodeFromInt(int code);

}  // namespace bitfleet::coordinator

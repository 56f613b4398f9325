#include "worker/nccl_bootstrap.h"

#include <thread>

#include "bitfleet/v1/control.grpc.pb.h"
#include "core/logging.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace bitfleet::worker {

StatusOr<std::string> ExchangeNcclId(const NcclIdExchange& x) {
  using Clock = std::chrono::system_clock;
  auto log = Logger("worker");
  const Clock::time_point deadline = Clock::now() + x.timeout;
  auto channel = grpc::CreateChannel(x.coordinator, grpc::InsecureChannelCredentials());
  auto stub = v1::Control::NewStub(channel);
  v1::NcclIdRequest request;
  request.set_replica(x.replica);
  request.set_rank(x.rank);
  request.set_world_size(x.world_size);
  request.set_unique_id(x.unique_id);  // the coordinator refuses an id from a rank other than 0
  for (;;) {
    grpc::ClientContext context;
    context.set_deadline(deadline);
    v1::NcclIdReply reply;
    const grpc::Status status = stub->ExchangeNcclId(&context, request, &reply);
    if (status.ok()) {
      if (x.rank == 0) return x.unique_id;
      log->info("replica {} rank {}: NCCL id received from the coordinator", x.replica, x.rank);
      return reply.unique_id();
    }
    // The coordinator not up yet (or restarting): try again until the deadline.
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE && Clock::now() + std::chrono::milliseconds(500) < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    return Status(static_cast<absl::StatusCode>(status.error_code()),
                  absl::StrCat("NCCL id exchange with ", x.coordinator, " (replica ", x.replica, " rank ", x.rank,
                               "): ", status.error_message()));
  }
}

}  // namespace bitfleet::worker

#include "sharding/nccl_communicator.h"

#include <nccl.h>

#include <cstring>
#include <thread>

#include "core/logging.h"
#include "kernels/cuda/cuda_status.h"
#include "sharding/local_rank.h"

namespace bitfleet::sharding {
namespace {

static_assert(kNcclUniqueIdBytes == NCCL_UNIQUE_ID_BYTES);

using Clock = std::chrono::steady_clock;

Status FailedGroupError() {
  return absl::UnavailableError("NCCL communicator has failed (aborted); the group must be rebuilt");
}

std::string NcclError(const char* what, ncclResult_t result, ncclComm_t comm) {
  std::string message = absl::StrCat(what, ": ", ncclGetErrorString(result));
  const char* last = comm != nullptr ? ncclGetLastError(comm) : nullptr;
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&message, " (", last, ")");
  return message;
}

// True for memory NCCL can use directly on `device`: device or managed allocations of it.
bool OnDevice(const void* p, int device) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return (attr.type == cudaMemoryTypeDevice && attr.device == device) || attr.type == cudaMemoryTypeManaged;
}

}  // namespace

StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return absl::UnavailableError(NcclError("ncclGetUniqueId", r, nullptr));
  return std::string(id.internal, sizeof(id.internal));
}

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(const NcclOptions& options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", options.rank, " out of range for size ", options.size));
  }
  if (options.unique_id.size() != kNcclUniqueIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL unique id must be ", kNcclUniqueIdBytes, " bytes, got ", options.unique_id.size()));
  }
  if (options.timeout.count() <= 0) return absl::InvalidArgumentError("NCCL timeout must be positive");
  if (options.device < -1) return absl::InvalidArgumentError(absl::StrCat("bad CUDA device ", options.device));

  std::string reason;
  const int n_devices = kernels::cuda::UsableCudaDevices(&reason);
  if (n_devices == 0) return absl::FailedPreconditionError(absl::StrCat("NCCL communicator: ", reason));
  const int device = options.device >= 0 ? options.device : NodeLocalRank() % n_devices;
  if (device >= n_devices) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", device, " of ", n_devices, " visible"));
  }
  BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(cudaSetDevice(device), "cudaSetDevice"));

  auto c = std::unique_ptr<NcclCommunicator>(new NcclCommunicator(options.rank, options.size, device, options.timeout));
  BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(cudaStreamCreateWithFlags(&c->own_stream_, cudaStreamNonBlocking),
                                               "cudaStreamCreate"));
  c->stream_ = c->own_stream_;

  ncclUniqueId id;
  std::memcpy(id.internal, options.unique_id.data(), sizeof(id.internal));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // init and collectives return at once; Wait() polls with a deadline
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, options.size, id, options.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) ncclCommAbort(comm);
    return absl::UnavailableError(NcclError("ncclCommInitRankConfig", r, nullptr));
  }
  c->comm_ = comm;
  BF_RETURN_IF_ERROR(c->Wait("NCCL init (every rank of the group must join)", /*wait_stream=*/false));
  Logger("nccl")->info("NCCL communicator ready: rank {} of {} on CUDA device {}", c->rank_, c->size_, c->device_);
  return c;
}

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::CreateOver(Communicator& bootstrap, int device,
                                                                          std::chrono::milliseconds timeout) {
  // One flag byte (1: rank 0 has an id) and the id, so a failure on rank 0 reaches every rank
  // instead of leaving them to time out on a garbage id.
  std::string message(1 + kNcclUniqueIdBytes, '\0');
  if (bootstrap.rank() == 0) {
    StatusOr<std::string> id = NewNcclUniqueId();
    if (id.ok()) {
      message[0] = 1;
      message.replace(1, kNcclUniqueIdBytes, *id);
    } else {
      Logger("nccl")->error("cannot create the NCCL unique id: {}", std::string(id.status().message()));
    }
  }
  BF_RETURN_IF_ERROR(bootstrap.Broadcast(message.data(), message.size(), 0));
  if (message[0] != 1) return absl::UnavailableError("rank 0 could not create an NCCL unique id");
  NcclOptions options;
  options.rank = bootstrap.rank();
  options.size = bootstrap.size();
  options.device = device;
  options.unique_id = message.substr(1);
  options.timeout = timeout;
  return Create(options);
}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(device_);
  if (comm_ != nullptr) {
    // Flush outstanding work, then release; a finalize that hangs (a dead peer) aborts.
    const ncclResult_t r = ncclCommFinalize(comm_);
    if (r == ncclSuccess || r == ncclInProgress) {
      if (Wait("NCCL finalize", /*wait_stream=*/false).ok()) ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
    comm_ = nullptr;
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (own_stream_ != nullptr) cudaStreamDestroy(own_stream_);
}

void NcclCommunicator::Abort() {
  if (comm_ == nullptr) return;
  cudaSetDevice(device_);
  ncclCommAbort(comm_);
  comm_ = nullptr;
}

Status NcclCommunicator::Fail(Status status) {
  Logger("nccl")->error("rank {}: {}; aborting the communicator", rank_, std::string(status.message()));
  Abort();
  return status;
}

Status NcclCommunicator::Wait(const char* what, bool wait_stream) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + timeout_;
  for (int polls = 0;; ++polls) {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
    if (r != ncclSuccess) return Fail(absl::UnavailableError(NcclError(what, r, comm_)));
    if (async != ncclSuccess && async != ncclInProgress) {
      return Fail(absl::UnavailableError(NcclError(what, async, comm_)));
    }
    if (async == ncclSuccess) {
      if (!wait_stream) return absl::OkStatus();
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) return Fail(kernels::cuda::CudaStatus(q, what));
    }
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(what, " did not complete within ", timeout_.count(),
                                                           " ms (rank ", rank_, " of ", size_,
                                                           "): a peer is dead, hung or unreachable")));
    }
    // Spin briefly (collectives of a decode step take microseconds), then back off.
    if (now - start < std::chrono::microseconds(200)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(polls < 1000 ? 20 : 200));
    }
  }
}

Status NcclCommunicator::EnsureScratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return absl::OkStatus();
  if (scratch_ != nullptr) {
    // The stream may still read the old buffer only if a previous collective failed, and then
    // the communicator is unusable anyway.
    cudaFree(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
  }
  BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(cudaMalloc(&scratch_, bytes), "NCCL staging buffer"));
  scratch_bytes_ = bytes;
  return absl::OkStatus();
}

Status NcclCommunicator::Run(Op op, const void* send, void* recv, size_t bytes, int root) {
  if (comm_ == nullptr) return FailedGroupError();
  if (bytes == 0) return absl::OkStatus();
  const Clock::time_point start = Clock::now();
  BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));

  const size_t recv_bytes = op == Op::kGather ? bytes * size_ : bytes;
  const bool staged = !OnDevice(recv, device_) || (op == Op::kGather && !OnDevice(send, device_));
  void* buffer = recv;
  const void* input = send;
  if (staged) {
    // In place on the scratch buffer: this rank's input at its slot (all-gather) or at 0.
    BF_RETURN_IF_ERROR(EnsureScratch(recv_bytes));
    buffer = scratch_;
    const size_t in_offset = op == Op::kGather ? bytes * rank_ : 0;
    input = static_cast<char*>(scratch_) + in_offset;
    BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(
        cudaMemcpyAsync(const_cast<void*>(input), send, bytes, cudaMemcpyDefault, stream_), "NCCL staging copy"));
  }

  ncclResult_t r;
  switch (op) {
    case Op::kSum:
    case Op::kMax:
      r = ncclAllReduce(input, buffer, bytes / sizeof(float), ncclFloat, op == Op::kSum ? ncclSum : ncclMax, comm_,
                        stream_);
      break;
    case Op::kGather:
      r = ncclAllGather(input, buffer, bytes, ncclChar, comm_, stream_);
      break;
    case Op::kBroadcast:
    default:
      r = ncclBroadcast(input, buffer, bytes, ncclChar, root, comm_, stream_);
      break;
  }
  if (r != ncclSuccess && r != ncclInProgress) return Fail(absl::UnavailableError(NcclError("NCCL collective", r, comm_)));
  if (staged) {
    // The collective first, within the deadline: a copy into pageable memory returns only when
    // it has run, so queued behind a collective whose peer is dead it would block past any
    // deadline. Then only the copy is left on the stream.
    BF_RETURN_IF_ERROR(Wait("NCCL collective", /*wait_stream=*/true));
    BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(
        cudaMemcpyAsync(recv, scratch_, recv_bytes, cudaMemcpyDefault, stream_), "NCCL staging copy back"));
  }
  // Deferred (device buffers only): queued is enough; Synchronize waits for the result.
  Status status = deferred_ && !staged ? Wait("NCCL collective enqueue", /*wait_stream=*/false)
                                       : Wait("NCCL collective", /*wait_stream=*/true);
  seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  return status;
}

Status NcclCommunicator::Synchronize() {
  if (comm_ == nullptr) return FailedGroupError();
  BF_RETURN_IF_ERROR(kernels::cuda::CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  return Wait("NCCL step", /*wait_stream=*/true);
}

Status NcclCommunicator::AllReduceSum(float* data, size_t count) {
  return Run(Op::kSum, data, data, count * sizeof(float), 0);
}

Status NcclCommunicator::AllReduceMax(float* data, size_t count) {
  return Run(Op::kMax, data, data, count * sizeof(float), 0);
}

Status NcclCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  return Run(Op::kGather, send, recv, bytes, 0);
}

Status NcclCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (root < 0 || root >= size_) return absl::InvalidArgumentError("broadcast root out of range");
  return Run(Op::kBroadcast, data, data, bytes, root);
}

Status NcclCommunicator::Barrier() {
  // A one-float all-reduce on the device: completes only when every rank has reached it.
  if (comm_ == nullptr) return FailedGroupError();
  BF_RETURN_IF_ERROR(EnsureScratch(sizeof(float)));
  BF_RETURN_IF_ERROR(Run(Op::kSum, scratch_, scratch_, sizeof(float), 0));
  return deferred_ ? Synchronize() : absl::OkStatus();  // a barrier that did not wait would be none
}

}  // namespace bitfleet::sharding

#include "sharding/mpi_communicator.h"

#include <mpi.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "core/logging.h"

namespace bitfleet::sharding {
namespace {

// MPI counts are int: large buffers are refused rather than silently truncated.
Status CheckCount(size_t count, const char* what) {
  if (count > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", count, " elements exceed MPI's int count"));
  }
  return absl::OkStatus();
}

Status MpiError(int code, const char* what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return absl::InternalError(absl::StrCat(what, " failed: ", std::string(text, len)));
}

// Set once a collective timed out: a peer is dead, hung or unreachable. MPI_Finalize would
// then wait forever for that peer, so the process must leave without it (mpirun reports the
// missing finalize and tears the job down, which is what a failed TP group needs).
std::atomic<bool> g_group_broken{false};

// Finalizes MPI at process exit if this module initialised it and the group is intact.
struct MpiFinalizer {
  ~MpiFinalizer() {
    if (g_group_broken.load()) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};

}  // namespace

bool MpiGroupBroken() { return g_group_broken.load(); }
void MarkMpiGroupBroken() { g_group_broken.store(true); }
void ResetMpiGroupBrokenForTesting() { g_group_broken.store(false); }

bool LaunchedUnderMpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
};

StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(std::chrono::milliseconds timeout) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Init_thread");
    static MpiFinalizer finalizer;
    (void)finalizer;
  }
  auto impl = std::make_unique<Impl>();
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &impl->comm);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Comm_dup");
  // Errors come back as codes so they can become Status values, not process aborts.
  MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN);
  int rank = 0, size = 0;
  MPI_Comm_rank(impl->comm, &rank);
  MPI_Comm_size(impl->comm, &size);
  Logger("mpi")->debug("rank {} of {} ready (collective timeout {} ms)", rank, size, timeout.count());
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(std::move(impl), rank, size, timeout));
}

MpiCommunicator::MpiCommunicator(std::unique_ptr<Impl> impl, int rank, int size, std::chrono::milliseconds timeout)
    : impl_(std::move(impl)), rank_(rank), size_(size), timeout_(timeout) {}

MpiCommunicator::~MpiCommunicator() {
  if (g_group_broken.load()) return;  // freeing a communicator with a lost peer can block too
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
}

Status MpiCommunicator::Wait(void* request_ptr, const char* what) {
  auto* request = static_cast<MPI_Request*>(request_ptr);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout_;
  int done = 0;
  // Spin briefly for latency, then back off to yields and short sleeps so a waiting rank does
  // not starve a peer that shares its core. The deadline is checked at every poll: an
  // oversubscribed Open MPI yields inside MPI_Test, and on a loaded machine the first 20000
  // polls could outlast the timeout (a hung peer then went unnoticed).
  for (int polls = 0;; ++polls) {
    int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return MpiError(rc, what);
    if (done) break;
    if (std::chrono::steady_clock::now() > deadline) {
      g_group_broken.store(true);
      return absl::DeadlineExceededError(absl::StrCat("rank ", rank_, ": ", what, " did not complete within ",
                                                      timeout_.count(), " ms (a peer rank died, hung or is unreachable)"));
    }
    if (polls < 1000) continue;
    if (polls < 20000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return absl::OkStatus();
}

Status MpiCommunicator::AllReduceSum(float* data, size_t count) {
  BF_RETURN_IF_ERROR(CheckCount(count, "all-reduce"));
  MPI_Request request;
  int rc = MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, impl_->comm, &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Iallreduce(sum)");
  return Wait(&request, "all-reduce(sum)");
}

Status MpiCommunicator::AllReduceMax(float* data, size_t count) {
  BF_RETURN_IF_ERROR(CheckCount(count, "all-reduce"));
  MPI_Request request;
  int rc = MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_MAX, impl_->comm, &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Iallreduce(max)");
  return Wait(&request, "all-reduce(max)");
}

Status MpiCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  BF_RETURN_IF_ERROR(CheckCount(bytes, "all-gather"));
  MPI_Request request;
  int rc = MPI_Iallgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE,
                          impl_->comm, &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Iallgather");
  return Wait(&request, "all-gather");
}

Status MpiCommunicator::Broadcast(void* data, size_t bytes, int root) {
  BF_RETURN_IF_ERROR(CheckCount(bytes, "broadcast"));
  if (root < 0 || root >= size_) return absl::InvalidArgumentError("broadcast root out of range");
  MPI_Request request;
  int rc = MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, impl_->comm, &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ibcast");
  return Wait(&request, "broadcast");
}

Status MpiCommunicator::Barrier() {
  MPI_Request request;
  int rc = MPI_Ibarrier(impl_->comm, &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ibarrier");
  return Wait(&request, "barrier");
}

void MpiCommunicator::Abort(int exit_code) {
  Logger("mpi")->error("rank {}: aborting the MPI job (exit code {})", rank_, exit_code);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

}  // namespace bitfleet::sharding

// The NCCL communicator on one GPU: every collective at TP=1 on device and host buffers, the
// deferred mode the CUDA runner uses (collectives queued on the caller's stream, also inside a
// CUDA graph), the bootstrap over another communicator, and failure detection: a group whose second rank never
// joins times out and aborts instead of hanging, and an aborted communicator reports UNAVAILABLE.
#include <chrono>
#include <vector>

#include "kernels/cuda/cuda_graph.h"
#include "sharding/nccl_communicator.h"
#include "tests/gpu/gpu_test_util.h"

namespace bitfleet::sharding {
namespace {

using gputest::DeviceArray;

std::unique_ptr<NcclCommunicator> SingleRank() {
  NcclOptions o;
  o.unique_id = NewNcclUniqueId().value();
  o.device = 0;
  o.timeout = std::chrono::seconds(30);
  StatusOr<std::unique_ptr<NcclCommunicator>> c = NcclCommunicator::Create(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

TEST(NcclCommunicatorTest, CollectivesAtTp1OnDeviceAndHostBuffers) {
  BF_REQUIRE_GPU();
  std::unique_ptr<NcclCommunicator> c = SingleRank();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_STREQ(c->backend(), "nccl");

  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 1e30f, -0.0f};
  DeviceArray<float> dev(values);
  ASSERT_TRUE(c->AllReduceSum(dev.get(), values.size()).ok());
  EXPECT_EQ(dev.ToHost(), values);
  ASSERT_TRUE(c->AllReduceMax(dev.get(), values.size()).ok());
  EXPECT_EQ(dev.ToHost(), values);

  std::vector<float> host = values;  // staged through the device
  ASSERT_TRUE(c->AllReduceSum(host.data(), host.size()).ok());
  EXPECT_EQ(host, values);

  DeviceArray<float> gathered(values.size());
  ASSERT_TRUE(c->AllGather(dev.get(), values.size() * sizeof(float), gathered.get()).ok());
  EXPECT_EQ(gathered.ToHost(), values);
  std::vector<float> host_gathered(values.size());
  ASSERT_TRUE(c->AllGather(values.data(), values.size() * sizeof(float), host_gathered.data()).ok());
  EXPECT_EQ(host_gathered, values);

  ASSERT_TRUE(c->Broadcast(dev.get(), values.size() * sizeof(float), 0).ok());
  EXPECT_EQ(dev.ToHost(), values);
  EXPECT_EQ(c->Broadcast(dev.get(), 4, 1).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(c->Barrier().ok());
  EXPECT_GT(c->seconds_in_collectives(), 0.0);
}

// Deferred: device-buffer collectives are queued after the stream's earlier work and finish by
// Synchronize; captured into a graph they replay with it; host buffers still complete at once.
TEST(NcclCommunicatorTest, DeferredCollectivesQueueOnTheCallersStreamAndCapture) {
  BF_REQUIRE_GPU();
  std::unique_ptr<NcclCommunicator> c = SingleRank();
  ASSERT_NE(c, nullptr);
  cudaStream_t stream = nullptr;
  BF_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  c->SetStream(stream);
  c->set_deferred(true);
  EXPECT_TRUE(c->deferred());

  const std::vector<float> values = {2.5f, -1.0f, 7.0f};
  DeviceArray<float> source(values);
  DeviceArray<float> dev(values.size());
  DeviceArray<float> replayed(values.size());
  // The arrays' zero fills run on the legacy stream, which `stream` does not wait for.
  BF_ASSERT_CUDA(cudaDeviceSynchronize());
  const size_t bytes = values.size() * sizeof(float);
  BF_ASSERT_CUDA(cudaMemcpyAsync(dev.get(), source.get(), bytes, cudaMemcpyDeviceToDevice, stream));
  ASSERT_TRUE(c->AllReduceSum(dev.get(), values.size()).ok());
  ASSERT_TRUE(c->AllReduceMax(dev.get(), values.size()).ok());
  ASSERT_TRUE(c->Synchronize().ok());
  EXPECT_EQ(dev.ToHost(), values);

  // The same work captured once and replayed twice (the runner's step graphs).
  kernels::cuda::CudaGraph graph;
  const Status captured = graph.Capture(stream, [&]() -> Status {
    if (cudaMemcpyAsync(replayed.get(), source.get(), bytes, cudaMemcpyDeviceToDevice, stream) != cudaSuccess) {
      return absl::InternalError("copy");
    }
    return c->AllReduceSum(replayed.get(), values.size());
  });
  ASSERT_TRUE(captured.ok()) << captured;
  for (int replay = 0; replay < 2; ++replay) {
    ASSERT_TRUE(graph.Launch(stream).ok());
    ASSERT_TRUE(c->Synchronize().ok());
    EXPECT_EQ(replayed.ToHost(), values) << "replay " << replay;
  }

  std::vector<float> host = values;  // a host buffer is needed on the host: it still waits
  ASSERT_TRUE(c->AllReduceSum(host.data(), host.size()).ok());
  EXPECT_EQ(host, values);

  c->set_deferred(false);
  c->SetStream(nullptr);
  BF_ASSERT_CUDA(cudaStreamDestroy(stream));
}

TEST(NcclCommunicatorTest, BootstrapsOverAnotherCommunicator) {
  BF_REQUIRE_GPU();
  SingleRankCommunicator bootstrap;
  StatusOr<std::unique_ptr<NcclCommunicator>> c = NcclCommunicator::CreateOver(bootstrap, 0);
  ASSERT_TRUE(c.ok()) << c.status();
  float x = 4.0f;
  ASSERT_TRUE((*c)->AllReduceSum(&x, 1).ok());
  EXPECT_EQ(x, 4.0f);
}

TEST(NcclCommunicatorTest, InitTimesOutWhenAPeerNeverJoins) {
  BF_REQUIRE_GPU();
  NcclOptions o;
  o.rank = 0;
  o.size = 2;  // rank 1 never comes
  o.device = 0;
  o.unique_id = NewNcclUniqueId().value();
  o.timeout = std::chrono::seconds(3);
  const auto start = std::chrono::steady_clock::now();
  StatusOr<std::unique_ptr<NcclCommunicator>> c = NcclCommunicator::Create(o);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDeadlineExceeded) << c.status();
  EXPECT_LT(seconds, 30.0) << "detection must be bounded by the timeout";
}

TEST(NcclCommunicatorTest, AbortedCommunicatorIsUnavailable) {
  BF_REQUIRE_GPU();
  std::unique_ptr<NcclCommunicator> c = SingleRank();
  ASSERT_NE(c, nullptr);
  c->Abort();
  EXPECT_TRUE(c->failed());
  float x = 1.0f;
  EXPECT_EQ(c->AllReduceSum(&x, 1).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c->Barrier().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace bitfleet::sharding

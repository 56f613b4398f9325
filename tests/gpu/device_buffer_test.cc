// Owned device and page-locked host buffers: zero-filled on allocation, copies both ways
// (synchronous and, from pinned memory, asynchronous on a stream), moves that hand over the
// allocation.
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/cuda/device_buffer.h"
#include "tests/gpu/gpu_test_util.h"

namespace bitfleet::kernels::cuda {
namespace {

TEST(DeviceBufferTest, PinnedHostBufferRoundTripsThroughTheDevice) {
  BF_REQUIRE_GPU();
  constexpr size_t kFloats = 100003;  // not a multiple of any page or vector size
  StatusOr<PinnedHostBuffer> src = PinnedHostBuffer::Allocate(kFloats * sizeof(float));
  StatusOr<PinnedHostBuffer> dst = PinnedHostBuffer::Allocate(kFloats * sizeof(float));
  StatusOr<DeviceBuffer> dev = DeviceBuffer::Allocate(kFloats * sizeof(float));
  ASSERT_TRUE(src.ok() && dst.ok() && dev.ok()) << src.status() << dst.status() << dev.status();
  ASSERT_EQ(src->bytes(), kFloats * sizeof(float));
  for (size_t i = 0; i < kFloats; ++i) ASSERT_EQ(src->as<float>()[i], 0.0f) << "not zero-filled at " << i;
  std::iota(src->as<float>(), src->as<float>() + kFloats, 0.5f);

  ASSERT_TRUE(dev->Upload(src->get(), kFloats * sizeof(float)).ok());
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(dst->get(), dev->get(), kFloats * sizeof(float), cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_EQ(std::memcmp(dst->get(), src->get(), kFloats * sizeof(float)), 0);

  // A move hands the allocation over and leaves the source empty.
  void* before = src->get();
  PinnedHostBuffer moved = std::move(*src);
  EXPECT_EQ(moved.get(), before);
  EXPECT_EQ(moved.bytes(), kFloats * sizeof(float));
  EXPECT_EQ(src->get(), nullptr);
  EXPECT_EQ(src->bytes(), 0u);

  StatusOr<PinnedHostBuffer> empty = PinnedHostBuffer::Allocate(0);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->get(), nullptr);
}

}  // namespace
}  // namespace bitfleet::kernels::cuda

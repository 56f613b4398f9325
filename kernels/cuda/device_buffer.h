// Owned allocations: DeviceBuffer, device memory (cudaMalloc / cudaFree) on the device current at
// allocation time; PinnedHostBuffer, page-locked host memory (cudaMallocHost / cudaFreeHost)
// that copies to and from the device run at full link speed and asynchronously (a copy from
// pageable memory is staged through a driver buffer, and one to pageable memory blocks the
// host). Move-only. Not thread-safe; the buffers themselves may be used from any stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <utility>

#include "core/status.h"

namespace bitfleet::kernels::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Free(); }

  // `bytes` of device memory (at least 256-byte aligned), zero-filled. Zero bytes gives an
  // empty buffer. RESOURCE_EXHAUSTED when the device is out of memory.
  static StatusOr<DeviceBuffer> Allocate(uint64_t bytes);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  uint64_t bytes() const { return bytes_; }

  // Synchronous copies between host memory and [offset, offset + size) of this buffer;
  // INVALID_ARGUMENT when the range is outside the buffer. Upload runs on the legacy stream and,
  // from pageable memory, may return before the data reaches the device: kernels on another
  // (non-blocking) stream are not ordered after it. Use it where a device synchronization
  // follows (loading); per-step inputs go through UploadAsync.
  Status Upload(const void* src, uint64_t size, uint64_t offset = 0);
  Status Download(void* dst, uint64_t size, uint64_t offset = 0) const;
  // The upload queued on `stream`, so the kernels queued after it there see the data. From
  // pageable memory the data is staged before the call returns (`src` may be reused at once);
  // from page-locked memory the copy is asynchronous and `src` must stay unchanged until the
  // stream has reached it.
  Status UploadAsync(const void* src, uint64_t size, cudaStream_t stream, uint64_t offset = 0);

 private:
  void Free();
  void* ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

class PinnedHostBuffer {
 public:
  PinnedHostBuffer() = default;
  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept { *this = std::move(other); }
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;
  ~PinnedHostBuffer() { Free(); }

  // `bytes` of page-locked host memory, zero-filled. Zero bytes gives an empty buffer.
  // RESOURCE_EXHAUSTED when the allocation fails (page-locked memory is limited by the OS).
  static StatusOr<PinnedHostBuffer> Allocate(uint64_t bytes);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  uint64_t bytes() const { return bytes_; }

 private:
  void Free();
  void* ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace bitfleet::kernels::cuda

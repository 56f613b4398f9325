#include "kernels/cuda/device_buffer.h"

#include <cuda_runtime_api.h>

#include <cstring>

#include "kernels/cuda/cuda_status.h"

namespace bitfleet::kernels::cuda {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Free();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::Free() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

StatusOr<DeviceBuffer> DeviceBuffer::Allocate(uint64_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  BF_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&buffer.ptr_, bytes), "cudaMalloc"));
  buffer.bytes_ = bytes;
  BF_RETURN_IF_ERROR(CudaStatus(cudaMemset(buffer.ptr_, 0, bytes), "cudaMemset"));
  return buffer;
}

Status DeviceBuffer::Upload(const void* src, uint64_t size, uint64_t offset) {
  if (offset > bytes_ || size > bytes_ - offset) return absl::InvalidArgumentError("DeviceBuffer::Upload out of range");
  if (size == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, size, cudaMemcpyHostToDevice), "upload");
}

Status DeviceBuffer::UploadAsync(const void* src, uint64_t size, cudaStream_t stream, uint64_t offset) {
  if (offset > bytes_ || size > bytes_ - offset) return absl::InvalidArgumentError("DeviceBuffer::UploadAsync out of range");
  if (size == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpyAsync(static_cast<char*>(ptr_) + offset, src, size, cudaMemcpyHostToDevice, stream),
                    "upload");
}

Status DeviceBuffer::Download(void* dst, uint64_t size, uint64_t offset) const {
  if (offset > bytes_ || size > bytes_ - offset) {
    return absl::InvalidArgumentError("DeviceBuffer::Download out of range");
  }
  if (size == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, size, cudaMemcpyDeviceToHost), "download");
}

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& other) noexcept {
  if (this != &other) {
    Free();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void PinnedHostBuffer::Free() {
  if (ptr_ != nullptr) cudaFreeHost(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

StatusOr<PinnedHostBuffer> PinnedHostBuffer::Allocate(uint64_t bytes) {
  PinnedHostBuffer buffer;
  if (bytes == 0) return buffer;
  BF_RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&buffer.ptr_, bytes), "cudaMallocHost"));
  buffer.bytes_ = bytes;
  std::memset(buffer.ptr_, 0, bytes);
  return buffer;
}

}  // namespace bitfleet::kernels::cuda

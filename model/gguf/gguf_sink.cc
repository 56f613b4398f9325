#include "model/gguf/gguf_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace bitfleet::gguf {
namespace {

Status ErrnoError(int err, const std::string& what) { return absl::ErrnoToStatus(err, what); }

}  // namespace

Status ByteSink::WriteZeros(uint64_t n) {
  static constexpr uint8_t kZeros[256] = {};
  while (n > 0) {
    const uint64_t chunk = n < sizeof(kZeros) ? n : sizeof(kZeros);
    BF_RETURN_IF_ERROR(Write(std::span<const uint8_t>(kZeros, chunk)));
    n -= chunk;
  }
  return absl::OkStatus();
}

StatusOr<std::unique_ptr<AtomicFileSink>> AtomicFileSink::Create(const std::string& path) {
  // Same directory as the destination, so rename() is atomic (one filesystem). O_EXCL plus a
  // per-process counter keeps concurrent writers, even of the same path, apart.
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string temp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return std::unique_ptr<AtomicFileSink>(new AtomicFileSink(path, std::move(temp), fd));
    const int err = errno;
    if (err != EEXIST) return ErrnoError(err, absl::StrCat("cannot create ", temp));
  }
  return absl::AlreadyExistsError(absl::StrCat("cannot find a free temporary name next to ", path));
}

AtomicFileSink::~AtomicFileSink() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

Status AtomicFileSink::Write(std::span<const uint8_t> bytes) {
  if (buffer_.size() + bytes.size() > kBufferBytes) BF_RETURN_IF_ERROR(Flush());
  // Large tensor data goes straight to the file; small header pieces are batched.
  if (bytes.size() >= kBufferBytes) return WriteAll(bytes);
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
  return absl::OkStatus();
}

Status AtomicFileSink::Flush() {
  BF_RETURN_IF_ERROR(WriteAll(buffer_));
  buffer_.clear();
  return absl::OkStatus();
}

Status AtomicFileSink::WriteAll(std::span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      return ErrnoError(err, absl::StrCat("cannot write ", temp_path_));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

Status AtomicFileSink::Commit() {
  BF_RETURN_IF_ERROR(Flush());
  if (::fsync(fd_) != 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat("cannot fsync ", temp_path_));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat("cannot close ", temp_path_));
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat("cannot rename ", temp_path_, " to ", path_));
  }
  committed_ = true;
  return absl::OkStatus();
}

}  // namespace bitfleet::gguf

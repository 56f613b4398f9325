// Internal to model/gguf: where GgufWriter's bytes go. A BufferSink appends to memory; an
// AtomicFileSink writes a temporary file beside the destination and renames it into place on
// Commit(), deleting it if the write fails or is abandoned.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/gguf/gguf.h"

namespace bitfleet::gguf {

class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual Status Write(std::span<const uint8_t> bytes) = 0;
  // Appends `n` zero bytes (alignment padding).
  Status WriteZeros(uint64_t n);
};

class BufferSink final : public ByteSink {
 public:
  Status Write(std::span<const uint8_t> bytes) override {
    out_.insert(out_.end(), bytes.begin(), bytes.end());
    return absl::OkStatus();
  }
  std::vector<uint8_t> Take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class AtomicFileSink final : public ByteSink {
 public:
  // Creates the temporary file (mode 0666 minus umask) next to `path`.
  static StatusOr<std::unique_ptr<AtomicFileSink>> Create(const std::string& path);
  // Removes the temporary file unless Commit() succeeded.
  ~AtomicFileSink() override;
  AtomicFileSink(const AtomicFileSink&) = delete;
  AtomicFileSink& operator=(const AtomicFileSink&) = delete;

  Status Write(std::span<const uint8_t> bytes) override;
  // Flushes, fsyncs and renames the temporary file to the destination.
  Status Commit();

 private:
  AtomicFileSink(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}
  Status Flush();
  Status WriteAll(std::span<const uint8_t> bytes);

  static constexpr size_t kBufferBytes = 1 << 20;
  std::string path_;
  std::string temp_path_;
  int fd_;
  bool committed_ = false;
  std::vector<uint8_t> buffer_;
};

}  // namespace bitfleet::gguf

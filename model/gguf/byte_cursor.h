// Internal to model/gguf: a bounds-checked little-endian reader over a byte span. Every read
// either succeeds completely or returns an error that says what was being read, where, and
// that the file is truncated; the cursor never reads outside its span.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace bitfleet::gguf {

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; the reader loads fields with memcpy");

class ByteCursor {
 public:
  explicit ByteCursor(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  // Error unless `n` more bytes are available; `what` names the field ("key of entry #3").
  Status Need(uint64_t n, std::string_view what) const {
    if (n <= remaining()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "truncated: ", std::string(what), " needs ", n, " bytes at offset ", pos_, " but only ",
        remaining(), " remain"));
  }

  // Reads one little-endian scalar (integer or float).
  template <typename T>
  StatusOr<T> Read(std::string_view what) {
    static_assert(std::is_arithmetic_v<T>);
    BF_RETURN_IF_ERROR(Need(sizeof(T), what));
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  // Reads a GGUF string (uint64 length, then that many bytes, no terminator). Lengths above
  // `max_bytes` are rejected before anything is copied.
  StatusOr<std::string_view> ReadString(std::string_view what, uint64_t max_bytes) {
    BF_ASSIGN_OR_RETURN(uint64_t length, Read<uint64_t>(absl::StrCat(std::string(what), " length")));
    if (length > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": string length ", length,
                                                     " exceeds the limit of ", max_bytes,
                                                     " bytes (ReadLimits::max_string_bytes)"));
    }
    BF_RETURN_IF_ERROR(Need(length, what));
    std::string_view out(reinterpret_cast<const char*>(bytes_.data() + pos_), length);
    pos_ += length;
    return out;
  }

 private:
  std::span<const uint8_t> bytes_;
  uint64_t pos_ = 0;
};

}  // namespace bitfleet::gguf

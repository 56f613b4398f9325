// The GPT-2 byte-to-unicode mapping used by byte-level BPE vocabularies: every byte value is
// shown as one printable code point, so token strings never hold raw control bytes or spaces
// (a space is "Ġ", U+0120). Bytes that are already printable Latin-1 ('!'..'~', '¡'..'¬',
// '®'..'ÿ') map to themselves; the other 68 map, in byte order, to U+0100, U+0101, ...
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace bitfleet::tokenizer {

class ByteLevelMap {
 public:
  // The process-wide table (built once, immutable, thread-safe).
  static const ByteLevelMap& Get();

  // UTF-8 of the code point that stands for byte `b`.
  std::string_view Encode(uint8_t b) const { return {encoded_[b].data(), encoded_len_[b]}; }
  // Appends the mapped form of every byte of `bytes`.
  void EncodeBytes(std::string_view bytes, std::string* out) const;
  // The byte a code point stands for, or -1 when it is not one of the 256 mapped points.
  int Decode(uint32_t code_point) const {
    return code_point < decoded_.size() ? decoded_[code_point] : -1;
  }

 private:
  ByteLevelMap();
  std::array<std::array<char, 2>, 256> encoded_{};
  std::array<uint8_t, 256> encoded_len_{};
  std::array<int16_t, 324> decoded_{};  // mapped code points are all below U+0144
};

}  // namespace bitfleet::tokenizer

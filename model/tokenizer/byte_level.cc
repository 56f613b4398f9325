#include "model/tokenizer/byte_level.h"

#include "model/tokenizer/utf8.h"

namespace bitfleet::tokenizer {
namespace {

bool MapsToItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

}  // namespace

const ByteLevelMap& ByteLevelMap::Get() {
  static const ByteLevelMap* const map = new ByteLevelMap();
  return *map;
}

ByteLevelMap::ByteLevelMap() {
  decoded_.fill(-1);
  uint32_t next_extra = 0x100;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = MapsToItself(b) ? static_cast<uint32_t>(b) : next_extra++;
    std::string utf8;
    AppendUtf8(cp, &utf8);  // at most U+0143: one or two bytes
    encoded_len_[b] = static_cast<uint8_t>(utf8.size());
    for (size_t i = 0; i < utf8.size(); ++i) encoded_[b][i] = utf8[i];
    decoded_[cp] = static_cast<int16_t>(b);
  }
}

void ByteLevelMap::EncodeBytes(std::string_view bytes, std::string* out) const {
  for (char c : bytes) out->append(Encode(static_cast<uint8_t>(c)));
}

}  // namespace bitfleet::tokenizer

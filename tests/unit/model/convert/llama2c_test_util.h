// Test helper: synthetic llama2.c checkpoints and tokenizers, built in memory so the converter
// is tested without any shared asset.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "model/convert/llama2c.h"

namespace bitfleet::convert::testing {

inline void AppendBytes(std::vector<uint8_t>& out, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  out.insert(out.end(), p, p + n);
}

// A checkpoint whose every float is distinct (index-derived), so a misplaced copy shows.
struct SyntheticCheckpoint {
  Llama2cHeader header;
  std::vector<uint8_t> bytes;

  // The float at float index `i` after the header.
  static float ValueAt(uint64_t i) { return static_cast<float>(i % 9973) * 0.001f - 4.0f + static_cast<float>(i / 9973); }

  // Float at byte offset `offset` (as ParseLlama2cCheckpoint reports offsets).
  float At(uint64_t offset) const {
    float v;
    std::memcpy(&v, bytes.data() + offset, sizeof(v));
    return v;
  }
};

inline SyntheticCheckpoint MakeCheckpoint(Llama2cHeader h) {
  SyntheticCheckpoint ckpt;
  ckpt.header = h;
  AppendBytes(ckpt.bytes, &h, sizeof(h));
  const uint64_t vocab = h.vocab_size < 0 ? -static_cast<int64_t>(h.vocab_size) : h.vocab_size;
  const uint64_t dim = h.dim, hidden = h.hidden_dim, layers = h.n_layers;
  const uint64_t head = dim / h.n_heads, kv = head * h.n_kv_heads;
  uint64_t floats = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * dim * hidden) + dim +
                    h.seq_len * head;
  if (h.vocab_size < 0) floats += vocab * dim;
  for (uint64_t i = 0; i < floats; ++i) {
    const float v = SyntheticCheckpoint::ValueAt(i);
    AppendBytes(ckpt.bytes, &v, sizeof(v));
  }
  return ckpt;
}

// Small GQA model: dim 8, hidden 12, 2 layers, 2 heads, 1 KV head, vocab 10, seq_len 4.
inline Llama2cHeader SmallHeader(bool shared = true) { return {8, 12, 2, 2, 1, shared ? 10 : -10, 4}; }

struct TokenEntry {
  float score;
  std::string text;
};

inline std::vector<uint8_t> MakeTokenizer(const std::vector<TokenEntry>& entries, int32_t max_len = -1) {
  std::vector<uint8_t> out;
  if (max_len < 0) {
    max_len = 1;
    for (const TokenEntry& e : entries) max_len = std::max<int32_t>(max_len, static_cast<int32_t>(e.text.size()));
  }
  AppendBytes(out, &max_len, sizeof(max_len));
  for (const TokenEntry& e : entries) {
    const int32_t len = static_cast<int32_t>(e.text.size());
    AppendBytes(out, &e.score, sizeof(e.score));
    AppendBytes(out, &len, sizeof(len));
    AppendBytes(out, e.text.data(), e.text.size());
  }
  return out;
}

// Ten tokens in llama2.c's spelling, covering every token type.
inline std::vector<TokenEntry> SmallVocab() {
  return {{0.0f, "<unk>"},  {0.0f, "\n<s>\n"}, {0.0f, "\n</s>\n"}, {0.0f, "<0x00>"}, {0.0f, "<0x0A>"},
          {-1.0f, " the"},  {-2.0f, "he"},     {-3.0f, ""},         {-4.0f, " a b"},  {-5.5f, "x"}};
}

inline void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace bitfleet::convert::testing

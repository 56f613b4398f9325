#include "model/tokenizer/spm_encoder.h"

#include <algorithm>
#include <cstdio>

#include "model/tokenizer/utf8.h"

namespace bitfleet::tokenizer {
namespace {

// "Larger" (lower priority) means a lower score, or an equal score further right.
bool WorseCandidate(const SpmEncoder::Scratch::Candidate& a, const SpmEncoder::Scratch::Candidate& b) {
  return a.score != b.score ? a.score < b.score : a.left > b.left;
}

}  // namespace

SpmEncoder::SpmEncoder(const Vocab& vocab, const TokenIndex& index) : vocab_(vocab), index_(index) {
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    TokenId id = index.Find(hex);
    if (id == kNoToken) id = index.FindTextToken(std::string_view(reinterpret_cast<const char*>(&b), 1));
    byte_token_[b] = id;
  }
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    if (!IsTextTokenType(vocab.types[id])) continue;
    const std::string_view token = vocab.tokens[id];
    uint32_t previous = 0;
    for (size_t pos = 0; pos < token.size();) {
      const Utf8Scan scan = ScanUtf8(token.substr(pos));
      // Ill-formed token text can never match valid (sanitized) input; its pairs don't matter.
      const uint32_t cp = scan.kind == Utf8Scan::Kind::kValid ? scan.code_point : 0xFFFFFFFF;
      if (pos > 0) inner_pairs_.insert(PairKey(previous, cp));
      previous = cp;
      pos += scan.length;
    }
  }
}

void SpmEncoder::PushCandidate(std::string_view text, int32_t left, int32_t right, Scratch* scratch) const {
  if (left < 0 || right < 0) return;
  const Scratch::Symbol& l = scratch->symbols[left];
  const Scratch::Symbol& r = scratch->symbols[right];
  const uint32_t length = l.length + r.length;
  const TokenId id = index_.FindTextToken(text.substr(l.begin, length));
  if (id == kNoToken) return;
  const float score = vocab_.scores.empty() ? 0.0f : vocab_.scores[id];
  scratch->heap.push_back({score, left, right, length});
  std::push_heap(scratch->heap.begin(), scratch->heap.end(), WorseCandidate);
}

void SpmEncoder::Encode(std::string_view text, Scratch* scratch, std::vector<TokenId>* out) const {
  auto& symbols = scratch->symbols;
  size_t pos = 0;
  while (pos < text.size()) {
    // One segment: characters up to the first boundary that no token spans.
    symbols.clear();
    uint32_t previous = 0;
    while (pos < text.size()) {
      const Utf8Scan scan = ScanUtf8(text.substr(pos));  // valid input: always kValid
      if (!symbols.empty() && !inner_pairs_.contains(PairKey(previous, scan.code_point))) break;
      const auto index = static_cast<int32_t>(symbols.size());
      symbols.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(scan.length), index - 1, index + 1});
      previous = scan.code_point;
      pos += scan.length;
    }
    symbols.back().next = -1;
    EncodeSegment(text, scratch, out);
  }
}

void SpmEncoder::EncodeSegment(std::string_view text, Scratch* scratch, std::vector<TokenId>* out) const {
  auto& symbols = scratch->symbols;
  scratch->heap.clear();
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) PushCandidate(text, i, i + 1, scratch);

  while (!scratch->heap.empty()) {
    std::pop_heap(scratch->heap.begin(), scratch->heap.end(), WorseCandidate);
    const Scratch::Candidate top = scratch->heap.back();
    scratch->heap.pop_back();
    Scratch::Symbol& left = symbols[top.left];
    Scratch::Symbol& right = symbols[top.right];
    // Stale when either side is gone or has grown since the candidate was queued.
    if (left.length == 0 || right.length == 0 || left.length + right.length != top.length) continue;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    PushCandidate(text, left.prev, top.left, scratch);
    PushCandidate(text, top.left, left.next, scratch);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = text.substr(symbols[i].begin, symbols[i].length);
    const TokenId id = index_.FindTextToken(piece);
    if (id != kNoToken) {
      out->push_back(id);
      continue;
    }
    // Byte fallback; a character with a byte the vocabulary cannot spell is one UNK.
    const bool spellable = std::all_of(piece.begin(), piece.end(), [this](char c) {
      return byte_token_[static_cast<uint8_t>(c)] != kNoToken;
    });
    if (spellable) {
      for (char c : piece) out->push_back(byte_token_[static_cast<uint8_t>(c)]);
    } else if (vocab_.special.unk != kNoToken) {
      out->push_back(vocab_.special.unk);
    }
  }
}

}  // namespace bitfleet::tokenizer

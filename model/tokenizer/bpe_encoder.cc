#include "model/tokenizer/bpe_encoder.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/tokenizer/byte_level.h"

namespace bitfleet::tokenizer {
namespace {

constexpr TokenId kDead = -2;

// Heap order: std::push_heap keeps the "largest" on top, so "larger" means worse rank, or
// equal rank further right.
bool WorseCandidate(const BpeEncoder::Scratch::Candidate& a, const BpeEncoder::Scratch::Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
}

}  // namespace

StatusOr<std::unique_ptr<BpeEncoder>> BpeEncoder::Create(const Vocab& vocab, const TokenIndex& index,
                                                         bool ignore_merges) {
  std::unique_ptr<BpeEncoder> encoder(new BpeEncoder(index));
  encoder->ignore_merges_ = ignore_merges;
  encoder->unk_ = vocab.special.unk;
  const ByteLevelMap& bytes = ByteLevelMap::Get();
  for (int b = 0; b < 256; ++b) encoder->byte_token_[b] = index.Find(bytes.Encode(static_cast<uint8_t>(b)));

  encoder->merges_.reserve(vocab.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const std::string_view line = vocab.merges[rank];
    // The separator is the first space after the first byte (a left side is never empty).
    const size_t space = line.size() > 1 ? line.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos || space + 1 >= line.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocab: merge ", rank, " ('", std::string(line), "') is not 'left right'"));
    }
    const std::string_view left = line.substr(0, space);
    const std::string_view right = line.substr(space + 1);
    joined.assign(left);
    joined.append(right);
    const TokenId left_id = index.Find(left);
    const TokenId right_id = index.Find(right);
    const TokenId result = index.Find(joined);
    if (left_id == kNoToken || right_id == kNoToken || result == kNoToken) {
      const std::string_view missing = left_id == kNoToken ? left : right_id == kNoToken ? right : joined;
      return absl::InvalidArgumentError(absl::StrCat("vocab: merge ", rank, " ('", std::string(line),
                                                     "') uses '", std::string(missing),
                                                     "', which is not a token"));
    }
    // Duplicate pairs keep their first (best) rank, as the references do.
    encoder->merges_.try_emplace(PairKey(left_id, right_id), Merge{static_cast<int32_t>(rank), result});
  }
  return encoder;
}

void BpeEncoder::PushCandidate(int32_t left, int32_t right, Scratch* scratch) const {
  if (left < 0 || right < 0) return;
  const TokenId left_id = scratch->symbols[left].id;
  const TokenId right_id = scratch->symbols[right].id;
  if (left_id < 0 || right_id < 0) return;
  auto it = merges_.find(PairKey(left_id, right_id));
  if (it == merges_.end()) return;
  scratch->heap.push_back({it->second.rank, left, right, left_id, right_id, it->second.result});
  std::push_heap(scratch->heap.begin(), scratch->heap.end(), WorseCandidate);
}

void BpeEncoder::EncodeWord(std::string_view word, Scratch* scratch, std::vector<TokenId>* out) const {
  if (word.empty() || cache_.Lookup(word, out)) return;
  const size_t first = out->size();
  MergeWord(word, scratch, out);
  cache_.Insert(word, out->data() + first, out->size() - first);
}

void BpeEncoder::MergeWord(std::string_view word, Scratch* scratch, std::vector<TokenId>* out) const {
  if (ignore_merges_) {
    // Llama 3 style: a word that is a token as a whole is that token, merges or not.
    scratch->mapped.clear();
    ByteLevelMap::Get().EncodeBytes(word, &scratch->mapped);
    const TokenId whole = index_.FindTextToken(scratch->mapped);
    if (whole != kNoToken) {
      out->push_back(whole);
      return;
    }
  }

  auto& symbols = scratch->symbols;
  const auto n = static_cast<int32_t>(word.size());
  symbols.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_token_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  scratch->heap.clear();
  for (int32_t i = 0; i + 1 < n; ++i) PushCandidate(i, i + 1, scratch);

  while (!scratch->heap.empty()) {
    std::pop_heap(scratch->heap.begin(), scratch->heap.end(), WorseCandidate);
    const Scratch::Candidate top = scratch->heap.back();
    scratch->heap.pop_back();
    Scratch::Symbol& left = symbols[top.left];
    Scratch::Symbol& right = symbols[top.right];
    // Stale when either side has merged since the candidate was queued. Two live symbols
    // that were adjacent stay adjacent: merges only remove symbols.
    if (left.id != top.left_id || right.id != top.right_id) continue;
    left.id = top.result;
    right.id = kDead;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    PushCandidate(left.prev, top.left, scratch);
    PushCandidate(top.left, left.next, scratch);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const TokenId id = symbols[i].id;
    if (id >= 0) {
      out->push_back(id);
    } else if (unk_ != kNoToken) {
      out->push_back(unk_);  // a byte the vocabulary cannot spell
    }
  }
}

}  // namespace bitfleet::tokenizer

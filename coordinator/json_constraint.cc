#include "coordinator/json_constraint.h"

#include <algorithm>
#include <utility>

namespace bitfleet::coordinator {
namespace {

void SetBit(TokenMask& mask, int32_t token) { mask[static_cast<size_t>(token) / 64] |= uint64_t{1} << (token % 64); }

}  // namespace

JsonVocabulary::JsonVocabulary(const tokenizer::Tokenizer& tokenizer) {
  token_bytes_.reserve(tokenizer.size());
  for (size_t id = 0; id < tokenizer.size(); ++id) {
    token_bytes_.emplace_back(tokenizer.pieces().Piece(static_cast<tokenizer::TokenId>(id), /*render_special=*/false));
  }
  end_of_generation_.assign(tokenizer.end_of_generation().begin(), tokenizer.end_of_generation().end());
  Build();
}

JsonVocabulary::JsonVocabulary(std::vector<std::string> token_bytes, std::vector<int32_t> end_of_generation)
    : token_bytes_(std::move(token_bytes)), end_of_generation_(std::move(end_of_generation)) {
  Build();
}

bool JsonVocabulary::IsEndOfGeneration(int32_t token) const {
  return std::find(end_of_generation_.begin(), end_of_generation_.end(), token) != end_of_generation_.end();
}

void JsonVocabulary::Build() {
  trie_.assign(1, Node{});
  for (int32_t token = 0; token < n_vocab(); ++token) {
    const std::string& bytes = token_bytes_[static_cast<size_t>(token)];
    if (bytes.empty() || IsEndOfGeneration(token)) continue;
    int32_t node = 0;
    for (char c : bytes) {
      const uint8_t b = static_cast<uint8_t>(c);
      auto& children = trie_[static_cast<size_t>(node)].children;
      auto it = std::lower_bound(children.begin(), children.end(), b,
                                 [](const std::pair<uint8_t, int32_t>& e, uint8_t v) { return e.first < v; });
      if (it != children.end() && it->first == b) {
        node = it->second;
        continue;
      }
      const int32_t child = static_cast<int32_t>(trie_.size());
      children.insert(it, {b, child});  // invalidated by the push_back below: not used after
      trie_.push_back(Node{});
      node = child;
    }
    trie_[static_cast<size_t>(node)].tokens.push_back(token);
  }
}

TokenMask JsonVocabulary::Walk(const JsonState& state) const {
  TokenMask mask((static_cast<size_t>(n_vocab()) + 63) / 64, 0);
  if (state.complete()) {
    for (int32_t token : end_of_generation_) {
      if (token >= 0 && token < n_vocab()) SetBit(mask, token);
    }
    return mask;
  }
  // Depth-first over the trie; each entry holds a node and the state after its bytes.
  std::vector<std::pair<int32_t, JsonState>> stack;
  stack.emplace_back(0, state);
  while (!stack.empty()) {
    const auto [node, at] = stack.back();
    stack.pop_back();
    for (const auto& [byte, child] : trie_[static_cast<size_t>(node)].children) {
      JsonState next = at;
      if (!next.Advance(byte)) continue;
      for (int32_t token : trie_[static_cast<size_t>(child)].tokens) SetBit(mask, token);
      if (!trie_[static_cast<size_t>(child)].children.empty()) stack.emplace_back(child, next);
    }
  }
  return mask;
}

TokenMask JsonVocabulary::AllowedByScan(const JsonState& state) const {
  TokenMask mask((static_cast<size_t>(n_vocab()) + 63) / 64, 0);
  for (int32_t token = 0; token < n_vocab(); ++token) {
    if (IsEndOfGeneration(token)) {
      if (state.complete()) SetBit(mask, token);
      continue;
    }
    const std::string& bytes = token_bytes_[static_cast<size_t>(token)];
    if (bytes.empty()) continue;
    JsonState s = state;
    bool ok = true;
    for (char c : bytes) ok = ok && s.Advance(static_cast<uint8_t>(c));
    if (ok) SetBit(mask, token);
  }
  return mask;
}

std::shared_ptr<const TokenMask> JsonVocabulary::Allowed(const JsonState& state) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = cache_.find(state);
    if (found != cache_.end()) return found->second;
  }
  auto mask = std::make_shared<const TokenMask>(Walk(state));
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= kMaxCachedMasks) cache_.clear();  // rare: a new working set builds again
  cache_.emplace(state, mask);
  return mask;
}

const TokenMask& JsonConstraint::AllowedTokens() {
  if (allowed_ == nullptr) allowed_ = vocabulary_->Allowed(state_);
  return *allowed_;
}

bool JsonConstraint::Accept(int32_t token) {
  if (!MaskHas(AllowedTokens(), token)) return false;
  if (!vocabulary_->IsEndOfGeneration(token)) {
    for (char c : vocabulary_->token_bytes(token)) {
      if (!state_.Advance(static_cast<uint8_t>(c))) return false;  // cannot happen: the mask allowed it
    }
  }
  allowed_ = nullptr;
  return true;
}

}  // namespace bitfleet::coordinator

#include "model/tokenizer/special_tokens.h"

#include <algorithm>
#include <map>
#include <string>

namespace bitfleet::tokenizer {
namespace {

bool IsSpecial(TokenType type) {
  return type == TokenType::kControl || type == TokenType::kUnknown || type == TokenType::kUserDefined;
}

}  // namespace

SpecialTokenMatcher::SpecialTokenMatcher(const Vocab& vocab) {
  // Build with a map per node (sorted children), then flatten the maps into edge arrays.
  std::vector<std::map<uint8_t, uint32_t>> children(1);
  nodes_.emplace_back();
  for (size_t i = 0; i < vocab.tokens.size() && i < vocab.types.size(); ++i) {
    const std::string& text = vocab.tokens[i];
    if (text.empty() || !IsSpecial(vocab.types[i])) continue;
    const bool user_defined = vocab.types[i] == TokenType::kUserDefined;
    uint32_t node = 0;
    for (const char c : text) {
      auto [it, inserted] = children[node].try_emplace(static_cast<uint8_t>(c), 0);
      if (inserted) {
        it->second = static_cast<uint32_t>(nodes_.size());
        nodes_.emplace_back();
        children.emplace_back();
      }
      node = it->second;
      if (user_defined) nodes_[node].user_defined_below = true;
    }
    // Ids arrive in increasing order, so the first one kept is the lowest with this spelling.
    const TokenId id = static_cast<TokenId>(i);
    Node& end = nodes_[node];
    if (end.id[kModeAll] == kNoToken) end.id[kModeAll] = id;
    if (user_defined && end.id[kModeUserDefined] == kNoToken) end.id[kModeUserDefined] = id;
    any_[kModeAll] = true;
    any_[kModeUserDefined] = any_[kModeUserDefined] || user_defined;
  }
  for (size_t node = 0; node < nodes_.size(); ++node) {
    nodes_[node].first_edge = static_cast<uint32_t>(edge_bytes_.size());
    nodes_[node].edge_count = static_cast<uint16_t>(children[node].size());
    for (const auto& [byte, child] : children[node]) {
      edge_bytes_.push_back(byte);
      edge_targets_.push_back(child);
    }
  }
  for (const auto& [byte, child] : children[0]) {
    first_node_[kModeAll][byte] = child;
    if (nodes_[child].user_defined_below) first_node_[kModeUserDefined][byte] = child;
  }
}

uint32_t SpecialTokenMatcher::Child(uint32_t node, uint8_t byte) const {
  const Node& n = nodes_[node];
  const uint8_t* begin = edge_bytes_.data() + n.first_edge;
  const uint8_t* end = begin + n.edge_count;
  const uint8_t* it = std::lower_bound(begin, end, byte);
  if (it == end || *it != byte) return kNoNode;
  return edge_targets_[static_cast<size_t>(it - edge_bytes_.data())];
}

SpecialTokenMatcher::Match SpecialTokenMatcher::LongestAt(std::string_view text, size_t pos, uint32_t first,
                                                          Mode mode) const {
  Match best;
  uint32_t node = first;
  size_t size = 1;
  while (true) {
    const Node& n = nodes_[node];
    if (n.id[mode] != kNoToken) best = {n.id[mode], size};
    if (pos + size == text.size()) break;
    node = Child(node, static_cast<uint8_t>(text[pos + size]));
    // In user-defined mode, a subtree holding only control tokens cannot extend the match.
    if (node == kNoNode || (mode == kModeUserDefined && !nodes_[node].user_defined_below)) break;
    ++size;
  }
  return best;
}

void SpecialTokenMatcher::Partition(std::string_view text, SpecialTokenParsing parsing,
                                    std::vector<Fragment>* out) const {
  if (text.empty()) return;
  const Mode mode = parsing == SpecialTokenParsing::kAll ? kModeAll : kModeUserDefined;
  if (parsing == SpecialTokenParsing::kNone || !any_[mode]) {
    out->push_back({kNoToken, {0, text.size()}});
    return;
  }
  const std::array<uint32_t, 256>& first_node = first_node_[mode];
  size_t plain_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const uint32_t first = first_node[static_cast<uint8_t>(text[pos])];
    if (first == kNoNode) {  // the common case: this byte starts no allowed token
      ++pos;
      continue;
    }
    const Match found = LongestAt(text, pos, first, mode);
    if (found.id == kNoToken) {
      ++pos;
      continue;
    }
    if (pos > plain_begin) out->push_back({kNoToken, {plain_begin, pos}});
    out->push_back({found.id, {pos, pos + found.size}});
    pos += found.size;
    plain_begin = pos;
  }
  if (plain_begin < text.size()) out->push_back({kNoToken, {plain_begin, text.size()}});
}

}  // namespace bitfleet::tokenizer

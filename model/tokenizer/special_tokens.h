// Finds special tokens (control, unknown and user-defined tokens such as <s>, <|eot_id|>,
// <|START_OF_TURN_TOKEN|>) written literally in text, when the caller allows it. By default
// nothing is matched: text from users stays text, so a prompt cannot forge control tokens.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "model/tokenizer/text_range.h"
#include "model/tokenizer/vocab.h"

namespace bitfleet::tokenizer {

// Which special tokens Encode recognises in text.
enum class SpecialTokenParsing {
  kNone,         // none: all text is plain text (the default, safe for user input)
  kUserDefined,  // user-defined (added) tokens only: what llama.cpp does without parse_special
  kAll,          // control, unknown and user-defined tokens: llama.cpp's parse_special
};

// One piece of partitioned text: either a special token or a stretch of plain text.
struct Fragment {
  TokenId token = kNoToken;  // kNoToken: plain text in `range`
  TextRange range;
};

// A byte trie of the special tokens, built once per vocabulary (it copies the bytes it needs,
// so it does not refer to the Vocab afterwards). Partition costs O(text bytes x D), where D is
// the length of the longest prefix of a special token found at a position (at most the longest
// special token): it does not grow with the number of special tokens, so a vocabulary with
// hundreds of them (Llama 3: 256) costs no more per byte than one with three.
class SpecialTokenMatcher {
 public:
  explicit SpecialTokenMatcher(const Vocab& vocab);

  // Splits `text` into fragments, scanning left to right and taking at each position the
  // longest allowed special token that starts there (when several allowed tokens are spelled
  // the same, the lowest id). Plain text between them becomes one fragment each. Appends to
  // `out`; appends nothing for empty text. Thread-safe.
  void Partition(std::string_view text, SpecialTokenParsing parsing, std::vector<Fragment>* out) const;

 private:
  // What one trie lookup answers for one parsing mode.
  enum Mode { kModeAll = 0, kModeUserDefined = 1, kModeCount = 2 };
  struct Match {
    TokenId id = kNoToken;
    size_t size = 0;
  };
  // A trie node: the path from the root spells a prefix of one or more special tokens.
  struct Node {
    uint32_t first_edge = 0;  // children: edges [first_edge, first_edge + edge_count)
    uint16_t edge_count = 0;  // up to 256
    bool user_defined_below = false;  // a user-defined token ends here or in the subtree
    std::array<TokenId, kModeCount> id = {kNoToken, kNoToken};  // lowest id spelled by the path
  };
  static constexpr uint32_t kNoNode = 0;  // the root is never a child, so 0 can mean "none"

  // The child of `node` along `byte`, or kNoNode.
  uint32_t Child(uint32_t node, uint8_t byte) const;
  // The longest token allowed in `mode` that starts at text[pos]; `first` is the node after
  // text[pos] (not kNoNode).
  Match LongestAt(std::string_view text, size_t pos, uint32_t first, Mode mode) const;

  std::vector<Node> nodes_;             // nodes_[0] is the root (the empty prefix)
  std::vector<uint8_t> edge_bytes_;     // per node, sorted ascending
  std::vector<uint32_t> edge_targets_;  // parallel to edge_bytes_
  // first_node_[mode][b]: the root's child along byte b when some token allowed in `mode`
  // starts with b, else kNoNode. Bytes that start no allowed token are skipped with one load.
  std::array<std::array<uint32_t, 256>, kModeCount> first_node_{};
  std::array<bool, kModeCount> any_{};  // some token is allowed in the mode
};

}  // namespace bitfleet::tokenizer

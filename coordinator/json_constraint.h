// response_format json_object: constrains a request's output to one JSON object
// (coordinator/json_grammar.h) followed by an end-of-generation token.
//
// JsonVocabulary indexes a tokenizer's token bytes once (a byte trie of every token that has
// visible bytes, laid out in preorder; control tokens have none and are never allowed), and
// computes the allowed-token mask of a grammar state by one pass over that array, advancing a
// copy of the state per node and skipping a node's whole subtree at the first byte the grammar
// refuses. Masks are cached per state: JSON output revisits few states (inside a string
// at a given nesting, after a value, ...), so most steps find theirs. Thread-safe (the cache has
// a lock): one vocabulary serves every request of a server.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/json_grammar.h"
#include "coordinator/output_constraint.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {

class JsonVocabulary {
 public:
  // Indexes `tokenizer`'s vocabulary (its pieces as the decoder writes them).
  explicit JsonVocabulary(const tokenizer::Tokenizer& tokenizer);
  // From raw token bytes and the end-of-generation ids (tests; "" marks a control token).
  JsonVocabulary(std::vector<std::string> token_bytes, std::vector<int32_t> end_of_generation);

  int32_t n_vocab() const { return static_cast<int32_t>(token_bytes_.size()); }
  const std::string& token_bytes(int32_t token) const { return token_bytes_[static_cast<size_t>(token)]; }
  bool IsEndOfGeneration(int32_t token) const;

  // The tokens whose bytes `state` accepts in full, and the end-of-generation tokens once the
  // document is complete.
  std::shared_ptr<const TokenMask> Allowed(const JsonState& state);
  // Allowed's work without its cache: the trie walk (`bench json-mask` times it).
  TokenMask Walk(const JsonState& state) const;
  // The same, by trying every token's bytes in turn (the reference the trie walk is tested
  // against).
  TokenMask AllowedByScan(const JsonState& state) const;

 private:
  // A trie node other than the root, in preorder: the byte of its edge, its depth (1 for the
  // root's children), where its subtree ends, and the tokens whose bytes end here.
  struct FlatNode {
    uint8_t byte = 0;
    int32_t depth = 0;
    int32_t subtree_end = 0;  // index past its last descendant
    int32_t tokens_begin = 0;  // into node_tokens_
    int32_t tokens_end = 0;
  };
  void Build();

  std::vector<std::string> token_bytes_;
  std::vector<int32_t> end_of_generation_;
  std::vector<FlatNode> nodes_;
  std::vector<int32_t> node_tokens_;
  int32_t max_depth_ = 0;

  struct StateHash {
    size_t operator()(const JsonState& s) const { return s.Hash(); }
  };
  static constexpr size_t kMaxCachedMasks = 4096;
  std::mutex mu_;
  std::unordered_map<JsonState, std::shared_ptr<const TokenMask>, StateHash> cache_;
};

// One request's constraint.
class JsonConstraint final : public OutputConstraint {
 public:
  explicit JsonConstraint(std::shared_ptr<JsonVocabulary> vocabulary) : vocabulary_(std::move(vocabulary)) {}

  const TokenMask& AllowedTokens() override;
  bool Accept(int32_t token) override;
  bool Complete() const override { return state_.complete(); }
  const JsonState& state() const { return state_; }

 private:
  std::shared_ptr<JsonVocabulary> vocabulary_;
  JsonState state_;
  std::shared_ptr<const TokenMask> allowed_;  // of state_, when computed
};

}  // namespace bitfleet::coordinator

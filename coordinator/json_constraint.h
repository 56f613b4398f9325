// response_format json_object / json_schema: constrains a request's output to one JSON document
// (coordinator/json_grammar.h: any object, or a schema's values) followed by an
// end-of-generation token.
//
// JsonVocabulary indexes a tokenizer's token bytes once (a byte trie of every token that has
// visible bytes, laid out in preorder; control tokens have none and are never allowed), and
// computes the allowed-token mask of a grammar state by one pass over that array, advancing a
// copy of the state per node and skipping a node's whole subtree at the first byte the grammar
// refuses. JsonGrammar caches masks per state: JSON output revisits few states (inside a
// string at a given nesting, after a value, ...), so most steps find theirs. One vocabulary
// serves every request of a server.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <unordered_map>
#include <vector>

#include "coordinator/json_grammar.h"
#include "coordinator/json_schema.h"
#include "coordinator/metrics.h"
#include "coordinator/output_constraint.h"
#include "core/status.h"
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
  size_t mask_bytes() const { return (static_cast<size_t>(n_vocab()) + 63) / 64 * sizeof(uint64_t); }

  // The tokens whose bytes `state` accepts in full, and the end-of-generation tokens when the
  // document is complete: the trie walk.
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
  void AddEndOfGeneration(const JsonState& state, TokenMask& mask) const;
  // Sets the tokens whose every byte `step` takes from `start` (State: JsonPath or JsonState).
  template <typename State, typename Step>
  void WalkTrie(const State& start, Step step, TokenMask& mask) const;

  std::vector<std::string> token_bytes_;
  std::vector<int32_t> end_of_generation_;
  std::vector<FlatNode> nodes_;
  std::vector<int32_t> node_tokens_;
  int32_t max_depth_ = 0;
};

// What JSON mode costs, on /metrics (null members: not counted).
struct JsonGrammarMetrics {
  // Registers bitfleet_json_* series in `registry`.
  explicit JsonGrammarMetrics(MetricsRegistry& registry);
  JsonGrammarMetrics() = default;

  Counter* schemas_compiled = nullptr;  // schema texts compiled (a miss of the kept ones)
  Counter* schemas_refused = nullptr;   // schema texts refused
  Counter* schema_hits = nullptr;       // requests whose schema was kept compiled
  Counter* masks_computed = nullptr;    // trie walks (a mask cache miss), on the scheduler thread mostly
  Counter* mask_seconds = nullptr;      // their time
  Counter* mask_hits = nullptr;         // masks found cached
};

// A schema over a vocabulary, with its masks cached per state (thread-safe: requests with the
// same schema share one).
class JsonGrammar {
 public:
  JsonGrammar(std::shared_ptr<const JsonVocabulary> vocabulary, std::shared_ptr<const JsonSchema> schema,
              size_t cache_bytes, std::shared_ptr<const JsonGrammarMetrics> metrics = nullptr);

  JsonState Start() const { return JsonState(schema_.get()); }
  const JsonVocabulary& vocabulary() const { return *vocabulary_; }
  // vocabulary().Walk(state), cached.
  std::shared_ptr<const TokenMask> Allowed(const JsonState& state);
  // Every token (free text).
  const TokenMask& AllTokens();
  // The tokens that begin free text rather than a value: their first byte after any whitespace
  // is one no value of the schema begins with.
  const TokenMask& TextStarts();

 private:
  struct StateHash {
    size_t operator()(const JsonState& s) const { return s.Hash(); }
  };
  std::shared_ptr<const JsonVocabulary> vocabulary_;
  std::shared_ptr<const JsonSchema> schema_;
  size_t max_cached_masks_;
  std::shared_ptr<const JsonGrammarMetrics> metrics_;  // may be null
  std::mutex mu_;
  std::unordered_map<JsonState, std::shared_ptr<const TokenMask>, StateHash> cache_;
  std::once_flag text_once_;
  TokenMask all_tokens_, text_starts_;
};

// A server's grammars: the vocabulary index (built on first use: a server whose clients never
// ask for JSON does not pay for it), json_object's grammar, and the latest schemas compiled
// (by their text: agents send the same schema with every request). Thread-safe.
class JsonGrammars {
 public:
  // Masks cached per grammar; schemas kept.
  static constexpr size_t kObjectCacheBytes = 32u << 20;
  static constexpr size_t kSchemaCacheBytes = 8u << 20;
  static constexpr size_t kMaxSchemas = 16;

  // Indexes `tokenizer` (which must outlive this) on first use; counts into `registry` if given.
  explicit JsonGrammars(const tokenizer::Tokenizer* tokenizer, MetricsRegistry* registry = nullptr)
      : tokenizer_(tokenizer),
        metrics_(std::make_shared<const JsonGrammarMetrics>(registry != nullptr ? JsonGrammarMetrics(*registry)
                                                                                : JsonGrammarMetrics())) {}
  explicit JsonGrammars(std::shared_ptr<const JsonVocabulary> vocabulary)
      : metrics_(std::make_shared<const JsonGrammarMetrics>()), vocabulary_(std::move(vocabulary)) {}

  std::shared_ptr<JsonGrammar> AnyObject();
  // INVALID_ARGUMENT for a schema json_schema.h refuses (JsonSchema::Compile's best_effort).
  StatusOr<std::shared_ptr<JsonGrammar>> ForSchema(std::string_view text, bool best_effort = false);

 private:
  std::shared_ptr<const JsonVocabulary> VocabularyLocked();

  std::mutex mu_;
  const tokenizer::Tokenizer* tokenizer_ = nullptr;
  std::shared_ptr<const JsonGrammarMetrics> metrics_;  // shared with the grammars (requests may outlive this)
  std::shared_ptr<const JsonVocabulary> vocabulary_;
  std::shared_ptr<JsonGrammar> any_object_;
  // Most recent first, by the schema's text after a byte for best effort ('b') or not ('s').
  std::list<std::pair<std::string, std::shared_ptr<JsonGrammar>>> schemas_;
};

// One request's constraint: a value of the grammar.
class JsonConstraint final : public OutputConstraint {
 public:
  explicit JsonConstraint(std::shared_ptr<JsonGrammar> grammar)
      : grammar_(std::move(grammar)), state_(grammar_->Start()) {}

  const TokenMask& AllowedTokens() override;
  bool Accept(int32_t token) override;
  bool Complete() const override { return state_.complete(); }
  std::unique_ptr<OutputConstraint> Clone() const override { return std::make_unique<JsonConstraint>(*this); }
  const JsonState& state() const { return state_; }

 private:
  std::shared_ptr<JsonGrammar> grammar_;
  JsonState state_;
  std::shared_ptr<const TokenMask> allowed_;  // of state_, when computed
};

// One request's constraint: free text, or a value of the grammar when the answer begins like
// one (its first byte after any whitespace). Undecided while only whitespace came; then either
// unconstrained or the grammar's.
class JsonOrTextConstraint final : public OutputConstraint {
 public:
  explicit JsonOrTextConstraint(std::shared_ptr<JsonGrammar> grammar)
      : grammar_(grammar), json_(std::move(grammar)) {}

  const TokenMask& AllowedTokens() override;
  bool Accept(int32_t token) override;
  bool Complete() const override { return mode_ == Mode::kText || (mode_ == Mode::kJson && json_.Complete()); }
  std::unique_ptr<OutputConstraint> Clone() const override { return std::make_unique<JsonOrTextConstraint>(*this); }
  // Whether the answer turned out to be a value (else text, or undecided).
  bool json() const { return mode_ == Mode::kJson; }

 private:
  enum class Mode { kUndecided, kText, kJson };
  std::shared_ptr<JsonGrammar> grammar_;
  JsonConstraint json_;
  Mode mode_ = Mode::kUndecided;
  TokenMask undecided_;  // the grammar's mask with the text starts, while undecided
};

}  // namespace bitfleet::coordinator

#include "coordinator/json_constraint.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace bitfleet::coordinator {
namespace {

void SetBit(TokenMask& mask, int32_t token) { mask[static_cast<size_t>(token) / 64] |= uint64_t{1} << (token % 64); }

// A counter of JsonGrammarMetrics, which may be unset.
void Count(Counter* counter, double value = 1) {
  if (counter != nullptr) counter->Increment(value);
}

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
  // The tokens sorted by their bytes list the trie in preorder: a token's node comes after its
  // prefixes' and before any longer token that extends it. Each distinct prefix is one node.
  std::vector<int32_t> order;
  for (int32_t token = 0; token < n_vocab(); ++token) {
    if (!token_bytes_[static_cast<size_t>(token)].empty() && !IsEndOfGeneration(token)) order.push_back(token);
  }
  std::stable_sort(order.begin(), order.end(), [this](int32_t a, int32_t b) {
    return token_bytes_[static_cast<size_t>(a)] < token_bytes_[static_cast<size_t>(b)];
  });
  nodes_.clear();
  node_tokens_.clear();
  std::vector<int32_t> path;  // node index per depth - 1 along the current prefix
  std::string previous;
  for (int32_t token : order) {
    const std::string& bytes = token_bytes_[static_cast<size_t>(token)];
    size_t common = 0;
    while (common < previous.size() && common < bytes.size() && previous[common] == bytes[common]) ++common;
    // Nodes deeper than the shared prefix are finished: their subtrees end here.
    for (size_t d = common; d < path.size(); ++d) {
      nodes_[static_cast<size_t>(path[d])].subtree_end = static_cast<int32_t>(nodes_.size());
    }
    path.resize(common);
    for (size_t d = common; d < bytes.size(); ++d) {
      FlatNode node;
      node.byte = static_cast<uint8_t>(bytes[d]);
      node.depth = static_cast<int32_t>(d) + 1;
      path.push_back(static_cast<int32_t>(nodes_.size()));
      nodes_.push_back(node);
    }
    FlatNode& end = nodes_[static_cast<size_t>(path.back())];
    if (end.tokens_end == end.tokens_begin) end.tokens_begin = static_cast<int32_t>(node_tokens_.size());
    node_tokens_.push_back(token);  // tokens of one node are adjacent: equal bytes sort together
    end.tokens_end = static_cast<int32_t>(node_tokens_.size());
    max_depth_ = std::max(max_depth_, static_cast<int32_t>(bytes.size()));
    previous = bytes;
  }
  for (int32_t index : path) nodes_[static_cast<size_t>(index)].subtree_end = static_cast<int32_t>(nodes_.size());
}

void JsonVocabulary::AddEndOfGeneration(const JsonState& state, TokenMask& mask) const {
  if (!state.complete()) return;
  for (int32_t token : end_of_generation_) {
    if (token >= 0 && token < n_vocab()) SetBit(mask, token);
  }
}

template <typename State, typename Step>
void JsonVocabulary::WalkTrie(const State& start, Step step, TokenMask& mask) const {
  // at[d]: the state after the first d bytes of the current node's path.
  std::vector<State> at(static_cast<size_t>(max_depth_) + 1, start);
  const int32_t n = static_cast<int32_t>(nodes_.size());
  for (int32_t i = 0; i < n;) {
    const FlatNode& node = nodes_[static_cast<size_t>(i)];
    State& here = at[static_cast<size_t>(node.depth)];
    here = at[static_cast<size_t>(node.depth) - 1];
    if (!step(here, node.byte)) {
      i = node.subtree_end;  // no token through this prefix
      continue;
    }
    for (int32_t k = node.tokens_begin; k < node.tokens_end; ++k) SetBit(mask, node_tokens_[static_cast<size_t>(k)]);
    ++i;
  }
}

TokenMask JsonVocabulary::Walk(const JsonState& state) const {
  TokenMask mask((static_cast<size_t>(n_vocab()) + 63) / 64, 0);
  AddEndOfGeneration(state, mask);
  if (const JsonPath* path = state.single()) {
    // One path that no byte splits (most states): walked as a path, the smaller copy.
    WalkTrie(*path, [](JsonPath& p, uint8_t byte) {
      JsonPath::Choice choice;
      return p.Step(byte, choice);
    }, mask);
  } else {
    WalkTrie(state, [](JsonState& s, uint8_t byte) { return s.AdvanceOrSpoil(byte); }, mask);
  }
  return mask;
}

TokenMask JsonVocabulary::AllowedByScan(const JsonState& state) const {
  TokenMask mask((static_cast<size_t>(n_vocab()) + 63) / 64, 0);
  AddEndOfGeneration(state, mask);
  for (int32_t token = 0; token < n_vocab(); ++token) {
    const std::string& bytes = token_bytes_[static_cast<size_t>(token)];
    if (IsEndOfGeneration(token) || bytes.empty()) continue;
    JsonState s = state;
    bool ok = true;
    for (char c : bytes) ok = ok && s.AdvanceOrSpoil(static_cast<uint8_t>(c));  // s is dropped if refused
    if (ok) SetBit(mask, token);
  }
  return mask;
}

JsonGrammarMetrics::JsonGrammarMetrics(MetricsRegistry& registry)
    : schemas_compiled(registry.AddCounter("bitfleet_json_schemas_compiled_total",
                                           "response_format json_schema texts compiled (not found kept)")),
      schemas_refused(registry.AddCounter("bitfleet_json_schemas_refused_total",
                                          "response_format json_schema texts refused (outside the subset)")),
      schema_hits(registry.AddCounter("bitfleet_json_schema_cache_hits_total",
                                      "json_schema requests whose schema was kept compiled")),
      masks_computed(registry.AddCounter("bitfleet_json_masks_computed_total",
                                         "JSON mode token masks computed (a new grammar state)")),
      mask_seconds(registry.AddCounter("bitfleet_json_mask_seconds_total",
                                       "Time spent computing JSON mode token masks (mostly on the scheduler thread)")),
      mask_hits(registry.AddCounter("bitfleet_json_mask_cache_hits_total", "JSON mode token masks found cached")) {}

JsonGrammar::JsonGrammar(std::shared_ptr<const JsonVocabulary> vocabulary, std::shared_ptr<const JsonSchema> schema,
                         size_t cache_bytes, std::shared_ptr<const JsonGrammarMetrics> metrics)
    : vocabulary_(std::move(vocabulary)),
      schema_(std::move(schema)),
      max_cached_masks_(std::max<size_t>(16, cache_bytes / std::max<size_t>(1, vocabulary_->mask_bytes()))),
      metrics_(std::move(metrics)) {}

std::shared_ptr<const TokenMask> JsonGrammar::Allowed(const JsonState& state) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = cache_.find(state);
    if (found != cache_.end()) {
      if (metrics_ != nullptr) Count(metrics_->mask_hits);  // metrics_ is null in tests
      return found->second;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  auto mask = std::make_shared<const TokenMask>(vocabulary_->Walk(state));
  if (metrics_ != nullptr) {
    Count(metrics_->masks_computed);
    Count(metrics_->mask_seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= max_cached_masks_) cache_.clear();  // rare: a new working set builds again
  cache_.emplace(state, mask);
  return mask;
}

std::shared_ptr<const JsonVocabulary> JsonGrammars::VocabularyLocked() {
  if (vocabulary_ == nullptr) vocabulary_ = std::make_shared<const JsonVocabulary>(*tokenizer_);
  return vocabulary_;
}

std::shared_ptr<JsonGrammar> JsonGrammars::AnyObject() {
  std::lock_guard<std::mutex> lock(mu_);
  if (any_object_ == nullptr) {
    any_object_ =
        std::make_shared<JsonGrammar>(VocabularyLocked(), JsonSchema::AnyObject(), kObjectCacheBytes, metrics_);
  }
  return any_object_;
}

StatusOr<std::shared_ptr<JsonGrammar>> JsonGrammars::ForSchema(std::string_view text, bool best_effort) {
  std::string key(1, best_effort ? 'b' : 's');
  key.append(text);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = schemas_.begin(); it != schemas_.end(); ++it) {
      if (it->first != key) continue;
      schemas_.splice(schemas_.begin(), schemas_, it);
      Count(metrics_->schema_hits);
      return schemas_.front().second;
    }
  }
  // Compiled outside the lock: a large schema does not hold up other requests.
  StatusOr<std::shared_ptr<const JsonSchema>> schema = JsonSchema::Compile(text, best_effort);
  Count(schema.ok() ? metrics_->schemas_compiled : metrics_->schemas_refused);
  if (!schema.ok()) return schema.status();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [kept_key, kept] : schemas_) {
    if (kept_key == key) return kept;  // compiled meanwhile by another request
  }
  auto grammar = std::make_shared<JsonGrammar>(VocabularyLocked(), *std::move(schema), kSchemaCacheBytes, metrics_);
  schemas_.emplace_front(key, grammar);
  if (schemas_.size() > kMaxSchemas) schemas_.pop_back();
  return grammar;
}

const TokenMask& JsonConstraint::AllowedTokens() {
  if (allowed_ == nullptr) allowed_ = grammar_->Allowed(state_);
  return *allowed_;
}

bool JsonConstraint::Accept(int32_t token) {
  if (!MaskHas(AllowedTokens(), token)) return false;
  const JsonVocabulary& vocabulary = grammar_->vocabulary();
  if (!vocabulary.IsEndOfGeneration(token)) {
    for (char c : vocabulary.token_bytes(token)) {
      if (!state_.Advance(static_cast<uint8_t>(c))) return false;  // cannot happen: the mask allowed it
    }
  }
  allowed_ = nullptr;
  return true;
}

const TokenMask& JsonGrammar::AllTokens() {
  TextStarts();
  return all_tokens_;
}

const TokenMask& JsonGrammar::TextStarts() {
  std::call_once(text_once_, [this] {
    const JsonVocabulary& vocabulary = *vocabulary_;
    all_tokens_.assign((static_cast<size_t>(vocabulary.n_vocab()) + 63) / 64, 0);
    text_starts_ = all_tokens_;
    const JsonState start = Start();
    for (int32_t token = 0; token < vocabulary.n_vocab(); ++token) {
      SetBit(all_tokens_, token);
      const std::string& bytes = vocabulary.token_bytes(token);
      const size_t first = bytes.find_first_not_of(" \t\n\r");
      if (first == std::string::npos || vocabulary.IsEndOfGeneration(token)) continue;
      JsonState value = start;
      if (!value.Advance(static_cast<uint8_t>(bytes[first]))) SetBit(text_starts_, token);
    }
  });
  return text_starts_;
}

const TokenMask& JsonOrTextConstraint::AllowedTokens() {
  switch (mode_) {
    case Mode::kText:
      return grammar_->AllTokens();
    case Mode::kJson:
      return json_.AllowedTokens();
    case Mode::kUndecided:
      break;
  }
  const TokenMask& value = json_.AllowedTokens();
  const TokenMask& text = grammar_->TextStarts();
  undecided_.resize(value.size());
  for (size_t i = 0; i < value.size(); ++i) undecided_[i] = value[i] | text[i];
  return undecided_;
}

bool JsonOrTextConstraint::Accept(int32_t token) {
  if (mode_ == Mode::kText) return true;
  if (mode_ == Mode::kJson) return json_.Accept(token);
  if (!MaskHas(AllowedTokens(), token)) return false;
  const std::string& bytes = grammar_->vocabulary().token_bytes(token);
  const bool whitespace = bytes.find_first_not_of(" \t\n\r") == std::string::npos;
  if (MaskHas(grammar_->TextStarts(), token)) {
    mode_ = Mode::kText;
    return true;
  }
  if (!json_.Accept(token)) return false;  // cannot happen: the mask allowed it
  if (!whitespace) mode_ = Mode::kJson;
  return true;
}

}  // namespace bitfleet::coordinator

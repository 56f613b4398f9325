#include "model/tokenizer/vocab.h"

#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace bitfleet::tokenizer {
namespace {

bool IsBytePiece(std::string_view text) {
  auto is_hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
  };
  return text.size() == 6 && text.substr(0, 3) == "<0x" && is_hex(text[3]) && is_hex(text[4]) &&
         text[5] == '>';
}

Status CheckSpecialId(const char* role, TokenId id, size_t n_tokens) {
  if (id == kNoToken || (id >= 0 && static_cast<size_t>(id) < n_tokens)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("vocab: ", role, " token id ", id, " is outside the vocabulary (", n_tokens, " tokens)"));
}

}  // namespace

std::string_view TokenizerModelName(TokenizerModel model) {
  switch (model) {
    case TokenizerModel::kSentencePiece: return "llama";
    case TokenizerModel::kByteLevelBpe: return "gpt2";
  }
  return "?";
}

void InferTokenTypes(Vocab* vocab) {
  if (!vocab->types.empty()) return;
  vocab->types.assign(vocab->tokens.size(), TokenType::kNormal);
  for (size_t i = 0; i < vocab->tokens.size(); ++i) {
    if (vocab->model == TokenizerModel::kSentencePiece && IsBytePiece(vocab->tokens[i])) {
      vocab->types[i] = TokenType::kByte;
    }
  }
  auto mark = [&](TokenId id, TokenType type) {
    if (id >= 0 && static_cast<size_t>(id) < vocab->types.size()) vocab->types[id] = type;
  };
  mark(vocab->special.unk, TokenType::kUnknown);
  mark(vocab->special.bos, TokenType::kControl);
  mark(vocab->special.eos, TokenType::kControl);
}

Status ValidateVocab(const Vocab& vocab) {
  const size_t n = vocab.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("vocab: no tokens");
  if (n > static_cast<size_t>(std::numeric_limits<TokenId>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("vocab: too many tokens (", n, ")"));
  }
  if (!vocab.scores.empty() && vocab.scores.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab: ", vocab.scores.size(), " scores for ", n, " tokens"));
  }
  if (!vocab.types.empty() && vocab.types.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab: ", vocab.types.size(), " token types for ", n, " tokens"));
  }
  for (size_t i = 0; i < vocab.types.size(); ++i) {
    const auto t = static_cast<int32_t>(vocab.types[i]);
    if (t < 0 || t > kMaxTokenType) {
      return absl::InvalidArgumentError(absl::StrCat("vocab: token ", i, " has unknown type ", t));
    }
  }
  absl::flat_hash_map<absl::string_view, size_t> seen;
  seen.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (vocab.tokens[i].empty()) continue;  // unmatchable, harmless (llama.cpp allows them too)
    auto [it, inserted] = seen.emplace(absl::string_view(vocab.tokens[i]), i);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("vocab: token ", i, " duplicates token ",
                                                     it->second, " ('", vocab.tokens[i], "')"));
    }
  }
  BF_RETURN_IF_ERROR(CheckSpecialId("BOS", vocab.special.bos, n));
  BF_RETURN_IF_ERROR(CheckSpecialId("EOS", vocab.special.eos, n));
  BF_RETURN_IF_ERROR(CheckSpecialId("UNK", vocab.special.unk, n));
  BF_RETURN_IF_ERROR(CheckSpecialId("PAD", vocab.special.pad, n));
  BF_RETURN_IF_ERROR(CheckSpecialId("SEP", vocab.special.sep, n));
  BF_RETURN_IF_ERROR(CheckSpecialId("EOT", vocab.special.eot, n));
  BF_RETURN_IF_ERROR(CheckSpecialId("EOM", vocab.special.eom, n));
  if (vocab.add_bos && vocab.special.bos == kNoToken) {
    return absl::InvalidArgumentError("vocab: add_bos is set but there is no BOS token");
  }
  if (vocab.add_eos && vocab.special.eos == kNoToken) {
    return absl::InvalidArgumentError("vocab: add_eos is set but there is no EOS token");
  }
  if (vocab.model == TokenizerModel::kByteLevelBpe && vocab.merges.empty()) {
    return absl::InvalidArgumentError("vocab: a byte-level BPE vocabulary needs merges");
  }
  return absl::OkStatus();
}

}  // namespace bitfleet::tokenizer

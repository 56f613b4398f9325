#include "model/tokenizer/gguf_vocab_loader.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "model/tokenizer/pre_tokenizer.h"

namespace bitfleet::tokenizer {
namespace {

// Turns NotFound into "absent"; keeps other errors (wrong type) as errors.
template <typename T>
StatusOr<std::optional<T>> Optional(StatusOr<T> result) {
  if (result.ok()) return std::optional<T>(std::move(result).value());
  if (absl::IsNotFound(result.status())) return std::optional<T>();
  return result.status();
}

// Reads a special-token id. `required_in_range`: an out-of-range id is an error rather than
// a warning (BOS and EOS, which Encode and generation rely on).
Status ReadSpecialId(const gguf::GgufFile& file, std::string_view key, size_t n_tokens,
                     bool required_in_range, TokenId* id) {
  BF_ASSIGN_OR_RETURN(std::optional<uint32_t> value, Optional(file.GetU32(key)));
  if (value.has_value()) {
    if (*value < n_tokens) {
      *id = static_cast<TokenId>(*value);
      return absl::OkStatus();
    }
    if (required_in_range) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(key), " = ", *value,
                                                     " is outside the vocabulary (", n_tokens, " tokens)"));
    }
    Logger("tokenizer")->warn("{} = {} is outside the vocabulary ({} tokens); ignoring it", key, *value, n_tokens);
    *id = kNoToken;
    return absl::OkStatus();
  }
  if (*id != kNoToken && static_cast<size_t>(*id) >= n_tokens) *id = kNoToken;  // default out of range
  return absl::OkStatus();
}

Status ReadFlag(const gguf::GgufFile& file, std::string_view key, bool* flag) {
  BF_ASSIGN_OR_RETURN(std::optional<bool> value, Optional(file.GetBool(key)));
  if (value.has_value()) *flag = *value;
  return absl::OkStatus();
}

}  // namespace

StatusOr<Vocab> LoadVocabFromGguf(const gguf::GgufFile& file) {
  Vocab vocab;
  BF_ASSIGN_OR_RETURN(std::string model, file.GetString(kKeyModel));
  if (model == "llama") {
    vocab.model = TokenizerModel::kSentencePiece;
    vocab.special.bos = 1;
    vocab.special.eos = 2;
    vocab.special.unk = 0;
    vocab.add_bos = true;
    vocab.add_space_prefix = true;
  } else if (model == "gpt2") {
    vocab.model = TokenizerModel::kByteLevelBpe;
  } else if (model == "no_vocab" || model == "none") {
    return absl::InvalidArgumentError("GGUF file has no vocabulary (tokenizer.ggml.model = '" + model + "')");
  } else {
    return absl::UnimplementedError(absl::StrCat("tokenizer model '", model,
                                                 "' is not supported (supported: llama, gpt2)"));
  }

  BF_ASSIGN_OR_RETURN(std::optional<std::string> pre, Optional(file.GetString(kKeyPre)));
  if (pre.has_value()) vocab.pre = *pre;
  if (vocab.model == TokenizerModel::kByteLevelBpe) {
    if (!pre.has_value()) {
      Logger("tokenizer")->warn("{} is missing; using the 'default' pre-tokenizer", kKeyPre);
    }
    const PreTokenizerSpec* spec = FindPreTokenizerSpec(vocab.pre);
    if (spec != nullptr) vocab.add_bos = spec->add_bos;  // unknown names fail in Tokenizer::Create
  }

  BF_ASSIGN_OR_RETURN(vocab.tokens, file.GetStringArray(kKeyTokens));
  const size_t n = vocab.tokens.size();
  BF_ASSIGN_OR_RETURN(std::optional<std::vector<float>> scores, Optional(file.GetF32Array(kKeyScores)));
  if (scores.has_value()) vocab.scores = std::move(*scores);
  BF_ASSIGN_OR_RETURN(std::optional<std::vector<int32_t>> types, Optional(file.GetI32Array(kKeyTokenType)));
  if (types.has_value()) {
    vocab.types.reserve(types->size());
    for (size_t i = 0; i < types->size(); ++i) {
      const int32_t t = (*types)[i];
      if (t < 0 || t > kMaxTokenType) {
        return absl::InvalidArgumentError(absl::StrCat(std::string(kKeyTokenType), "[", i, "] = ", t,
                                                       " is not a token type (0..", kMaxTokenType, ")"));
      }
      vocab.types.push_back(static_cast<TokenType>(t));
    }
  }
  if (vocab.model == TokenizerModel::kByteLevelBpe) {
    BF_ASSIGN_OR_RETURN(vocab.merges, file.GetStringArray(kKeyMerges));
  }

  BF_RETURN_IF_ERROR(ReadSpecialId(file, kKeyBosId, n, /*required_in_range=*/true, &vocab.special.bos));
  BF_RETURN_IF_ERROR(ReadSpecialId(file, kKeyEosId, n, /*required_in_range=*/true, &vocab.special.eos));
  BF_RETURN_IF_ERROR(ReadSpecialId(file, kKeyUnkId, n, false, &vocab.special.unk));
  BF_RETURN_IF_ERROR(ReadSpecialId(file, kKeyPadId, n, false, &vocab.special.pad));
  BF_RETURN_IF_ERROR(ReadSpecialId(file, kKeySepId, n, false, &vocab.special.sep));
  BF_RETURN_IF_ERROR(ReadSpecialId(file, kKeyEotId, n, false, &vocab.special.eot));
  BF_RETURN_IF_ERROR(ReadSpecialId(file, kKeyEomId, n, false, &vocab.special.eom));

  BF_RETURN_IF_ERROR(ReadFlag(file, kKeyAddBos, &vocab.add_bos));
  BF_RETURN_IF_ERROR(ReadFlag(file, kKeyAddEos, &vocab.add_eos));
  BF_RETURN_IF_ERROR(ReadFlag(file, kKeyAddSpacePrefix, &vocab.add_space_prefix));
  return vocab;
}

StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromGguf(const std::string& path) {
  BF_ASSIGN_OR_RETURN(auto file, gguf::GgufFile::Open(path));
  auto vocab = LoadVocabFromGguf(*file);
  if (!vocab.ok()) {
    return absl::Status(vocab.status().code(), absl::StrCat(path, ": ", std::string(vocab.status().message())));
  }
  auto tokenizer = Tokenizer::Create(std::move(vocab).value());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(path, ": ", std::string(tokenizer.status().message())));
  }
  return tokenizer;
}

}  // namespace bitfleet::tokenizer

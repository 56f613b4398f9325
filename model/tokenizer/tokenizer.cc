#include "model/tokenizer/tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/tokenizer/utf8.h"

namespace bitfleet::tokenizer {

// Working memory of one Encode call, reused across its fragments and words.
struct EncodeScratch {
  std::vector<Fragment> fragments;
  std::string escaped;
  BpeEncoder::Scratch bpe;
  SpmEncoder::Scratch spm;
};

namespace {

constexpr std::string_view kEscapedSpace = "\xE2\x96\x81";  // ▁ U+2581

// Token texts that end a turn or the text in well-known chat vocabularies.
constexpr std::string_view kEndOfGenerationTexts[] = {
    "<|eot_id|>", "<|im_end|>",      "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<|end_of_text|>", "<EOT>",   "<｜end▁of▁sentence｜>",
};

std::vector<TokenId> FindEndOfGeneration(const Vocab& vocab, const TokenIndex& index) {
  std::vector<TokenId> ids;
  for (TokenId id : {vocab.special.eos, vocab.special.eot, vocab.special.eom}) {
    if (id != kNoToken) ids.push_back(id);
  }
  for (std::string_view text : kEndOfGenerationTexts) {
    const TokenId id = index.Find(text);
    if (id != kNoToken && !IsTextTokenType(vocab.types[id])) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(Vocab vocab) {
  InferTokenTypes(&vocab);
  BF_RETURN_IF_ERROR(ValidateVocab(vocab));
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->vocab_ = std::move(vocab);
  const Vocab& v = tok->vocab_;  // everything below points into this, which never changes
  tok->index_ = std::make_unique<TokenIndex>(v);
  tok->specials_ = std::make_unique<SpecialTokenMatcher>(v);
  tok->pieces_ = std::make_unique<PieceTable>(v);
  if (v.model == TokenizerModel::kByteLevelBpe) {
    BF_ASSIGN_OR_RETURN(tok->pre_tokenizer_, PreTokenizer::Create(v.pre));
    BF_ASSIGN_OR_RETURN(tok->bpe_,
                        BpeEncoder::Create(v, *tok->index_, tok->pre_tokenizer_->spec().ignore_merges));
  } else {
    tok->spm_ = std::make_unique<SpmEncoder>(v, *tok->index_);
  }
  tok->end_of_generation_ = FindEndOfGeneration(v, *tok->index_);
  return tok;
}

std::string_view Tokenizer::pre_tokenizer_name() const {
  return pre_tokenizer_ ? pre_tokenizer_->spec().names.front() : std::string_view();
}

bool Tokenizer::IsEndOfGeneration(TokenId id) const {
  return std::binary_search(end_of_generation_.begin(), end_of_generation_.end(), id);
}

bool Tokenizer::strips_leading_space_by_default() const {
  return vocab_.model == TokenizerModel::kSentencePiece && vocab_.add_space_prefix;
}

Status Tokenizer::EncodeText(std::string_view text, bool after_special, EncodeScratch* scratch,
                             std::vector<TokenId>* out) const {
  if (vocab_.model == TokenizerModel::kSentencePiece) {
    // SentencePiece sees spaces as ▁ and, with add_space_prefix, one more ▁ at the start of
    // the text and after every special token (llama.cpp's behaviour).
    std::string& escaped = scratch->escaped;
    escaped.clear();
    if (vocab_.add_space_prefix && after_special) escaped.append(kEscapedSpace);
    for (char c : text) {
      if (c == ' ') {
        escaped.append(kEscapedSpace);
      } else {
        escaped.push_back(c);
      }
    }
    spm_->Encode(escaped, &scratch->spm, out);
    return absl::OkStatus();
  }
  return pre_tokenizer_->ForEachWord(
      text, [&](TextRange word) { bpe_->EncodeWord(word.Of(text), &scratch->bpe, out); });
}

StatusOr<std::vector<TokenId>> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  const size_t limit = std::min(options.max_input_bytes, kMaxEncodeBytesLimit);
  if (text.size() > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("text to tokenize is ", text.size(), " bytes, more than the limit of ", limit));
  }
  std::string sanitized;
  if (!IsValidUtf8(text)) {
    sanitized = SanitizeUtf8(text);
    text = sanitized;
  }

  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 2);
  if (options.add_special && vocab_.add_bos) ids.push_back(vocab_.special.bos);

  EncodeScratch scratch;
  specials_->Partition(text, options.special_tokens, &scratch.fragments);
  bool after_special = true;  // the start of the text counts as "after a special token"
  for (const Fragment& fragment : scratch.fragments) {
    if (fragment.token != kNoToken) {
      ids.push_back(fragment.token);
      after_special = true;
      continue;
    }
    BF_RETURN_IF_ERROR(EncodeText(fragment.range.Of(text), after_special, &scratch, &ids));
    after_special = false;
  }

  if (options.add_special && vocab_.add_eos) ids.push_back(vocab_.special.eos);
  return ids;
}

StatusOr<std::string> Tokenizer::Decode(std::span<const TokenId> ids, const DecodeOptions& options) const {
  PieceWriter writer(*pieces_, options.render_special,
                     options.strip_leading_space.value_or(strips_leading_space_by_default()));
  std::string text;
  for (TokenId id : ids) BF_RETURN_IF_ERROR(writer.Append(id, &text));
  return text;
}

}  // namespace bitfleet::tokenizer

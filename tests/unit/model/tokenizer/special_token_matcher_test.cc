// SpecialTokenMatcher (a trie) against the simple matcher it replaced, kept here as the
// reference: same fragments, byte for byte, on random vocabularies and texts and on the real
// vocabularies of the tokenizer vectors; and 1 MiB of text against 256 specials costs far less.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "model/tokenizer/special_tokens.h"

namespace bitfleet::tokenizer {
namespace {

constexpr std::array<SpecialTokenParsing, 3> kAllParsings = {
    SpecialTokenParsing::kNone, SpecialTokenParsing::kUserDefined, SpecialTokenParsing::kAll};

// The matcher as it was before the trie: candidates bucketed by first byte, each bucket sorted
// longest first (stable, so equal lengths keep id order); at each position the first allowed
// candidate that matches wins. Cost per position: every candidate in the bucket.
class ReferenceMatcher {
 public:
  explicit ReferenceMatcher(const Vocab& vocab) {
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
      const TokenType type = vocab.types[i];
      if (vocab.tokens[i].empty()) continue;
      if (type != TokenType::kControl && type != TokenType::kUnknown && type != TokenType::kUserDefined) {
        continue;
      }
      by_first_byte_[static_cast<uint8_t>(vocab.tokens[i][0])].push_back(
          {static_cast<TokenId>(i), type == TokenType::kUserDefined, vocab.tokens[i]});
      any_ = true;
    }
    for (auto& bucket : by_first_byte_) {
      std::stable_sort(bucket.begin(), bucket.end(), [](const Candidate& a, const Candidate& b) {
        return a.text.size() > b.text.size();
      });
    }
  }

  void Partition(std::string_view text, SpecialTokenParsing parsing, std::vector<Fragment>* out) const {
    if (text.empty()) return;
    if (parsing == SpecialTokenParsing::kNone || !any_) {
      out->push_back({kNoToken, {0, text.size()}});
      return;
    }
    size_t plain_begin = 0;
    size_t pos = 0;
    while (pos < text.size()) {
      const Candidate* found = nullptr;
      for (const Candidate& candidate : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
        if (!candidate.user_defined && parsing != SpecialTokenParsing::kAll) continue;
        if (text.substr(pos, candidate.text.size()) == candidate.text) {
          found = &candidate;
          break;
        }
      }
      if (found == nullptr) {
        ++pos;
        continue;
      }
      if (pos > plain_begin) out->push_back({kNoToken, {plain_begin, pos}});
      out->push_back({found->id, {pos, pos + found->text.size()}});
      pos += found->text.size();
      plain_begin = pos;
    }
    if (plain_begin < text.size()) out->push_back({kNoToken, {plain_begin, text.size()}});
  }

 private:
  struct Candidate {
    TokenId id;
    bool user_defined;
    std::string text;
  };
  std::array<std::vector<Candidate>, 256> by_first_byte_;
  bool any_ = false;
};

// Fragments as comparable triples (token, begin, end).
using Triples = std::vector<std::array<int64_t, 3>>;

Triples ToTriples(const std::vector<Fragment>& fragments) {
  Triples out;
  for (const Fragment& f : fragments) {
    out.push_back({f.token, static_cast<int64_t>(f.range.begin), static_cast<int64_t>(f.range.end)});
  }
  return out;
}

template <typename Matcher>
Triples Split(const Matcher& matcher, std::string_view text, SpecialTokenParsing parsing) {
  std::vector<Fragment> fragments;
  matcher.Partition(text, parsing, &fragments);
  return ToTriples(fragments);
}

std::string Printable(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<uint8_t>(c);
    if (byte >= 0x20 && byte < 0x7F) {
      out += c;
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
  }
  return out;
}

// Deterministic pseudo-random choices (std::mt19937_64's output is fixed by the standard;
// the std:: distributions are not, so they are avoided).
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  size_t Below(size_t n) { return static_cast<size_t>(engine_() % n); }
  bool OneIn(size_t n) { return Below(n) == 0; }

 private:
  std::mt19937_64 engine_;
};

// A small alphabet (so specials collide, share prefixes and overlap), with a NUL and a byte
// that is not ASCII.
constexpr std::string_view kAlphabet("<|>ab\0\xff", 7);

std::string RandomBytes(Rng& rng, size_t max_size, size_t alphabet_size) {
  std::string out(1 + rng.Below(max_size), ' ');
  for (char& c : out) c = kAlphabet[rng.Below(alphabet_size)];
  return out;
}

TokenType RandomType(Rng& rng) {
  constexpr std::array<TokenType, 6> kTypes = {TokenType::kControl, TokenType::kUnknown,
                                               TokenType::kUserDefined, TokenType::kUserDefined,
                                               TokenType::kNormal, TokenType::kByte};
  return kTypes[rng.Below(kTypes.size())];
}

// 1 to 14 tokens: fresh strings, prefixes and extensions of earlier ones (a special that is a
// prefix of another), exact duplicates with another type, the odd empty token; mixed types,
// including non-special ones that must never match.
Vocab RandomVocab(Rng& rng, size_t alphabet_size) {
  Vocab vocab;
  const size_t count = 1 + rng.Below(14);
  for (size_t i = 0; i < count; ++i) {
    std::string text;
    const size_t kind = vocab.tokens.empty() ? 0 : rng.Below(10);
    const std::string& earlier = vocab.tokens.empty() ? text : vocab.tokens[rng.Below(vocab.tokens.size())];
    if (kind < 3 || earlier.empty()) {
      text = RandomBytes(rng, 6, alphabet_size);
    } else if (kind < 5) {
      text = earlier.substr(0, 1 + rng.Below(earlier.size()));  // a prefix (maybe all of it)
    } else if (kind < 8) {
      text = earlier + RandomBytes(rng, 4, alphabet_size);  // an extension
    } else if (kind < 9) {
      text = earlier;  // a duplicate spelling
    }  // else: empty
    vocab.tokens.push_back(std::move(text));
    vocab.types.push_back(RandomType(rng));
  }
  return vocab;
}

// Whole tokens, parts of tokens (prefixes, suffixes) and noise, concatenated.
std::string RandomText(Rng& rng, const Vocab& vocab, size_t alphabet_size) {
  std::string text;
  const size_t pieces = rng.Below(24);
  for (size_t i = 0; i < pieces; ++i) {
    const std::string& token = vocab.tokens[rng.Below(vocab.tokens.size())];
    switch (rng.Below(4)) {
      case 0:
        text += token;
        break;
      case 1:
        text += token.substr(0, rng.Below(token.size() + 1));
        break;
      case 2:
        text += token.substr(rng.Below(token.size() + 1));
        break;
      default:
        text += RandomBytes(rng, 3, alphabet_size);
        break;
    }
  }
  return text;
}

TEST(SpecialTokenMatcherTest, RandomVocabulariesMatchReference) {
  Rng rng(20240611);
  size_t special_fragments = 0;
  size_t plain_fragments = 0;
  for (int round = 0; round < 10000; ++round) {
    const size_t alphabet_size = 2 + rng.Below(kAlphabet.size() - 1);
    const Vocab vocab = RandomVocab(rng, alphabet_size);
    const SpecialTokenMatcher matcher(vocab);
    const ReferenceMatcher reference(vocab);
    for (int t = 0; t < 6; ++t) {
      const std::string text = RandomText(rng, vocab, alphabet_size);
      for (const SpecialTokenParsing parsing : kAllParsings) {
        const Triples got = Split(matcher, text, parsing);
        ASSERT_EQ(got, Split(reference, text, parsing))
            << "round " << round << " text '" << Printable(text) << "' parsing " << static_cast<int>(parsing);
        for (const auto& fragment : got) ++(fragment[0] == kNoToken ? plain_fragments : special_fragments);
      }
    }
  }
  // The comparison saw plenty of both kinds (it is not vacuous).
  EXPECT_GT(special_fragments, 50000u);
  EXPECT_GT(plain_fragments, 50000u);
}

TEST(SpecialTokenMatcherTest, LongestMatchAndTieBreaks) {
  Vocab vocab;
  auto add = [&](std::string text, TokenType type) {
    vocab.tokens.push_back(std::move(text));
    vocab.types.push_back(type);
    return static_cast<TokenId>(vocab.tokens.size() - 1);
  };
  const TokenId ab_control = add("<ab>", TokenType::kControl);
  const TokenId ab_user = add("<ab>", TokenType::kUserDefined);  // same spelling, higher id
  const TokenId abc_control = add("<ab>c", TokenType::kControl);
  const TokenId a_user = add("<a", TokenType::kUserDefined);
  add("<ab>cd", TokenType::kNormal);  // not special: never matched
  const SpecialTokenMatcher matcher(vocab);
  const std::string text = "x<ab>cd<ab>";
  // kAll: the longest at each position; of two equal spellings, the lower id.
  EXPECT_EQ(Split(matcher, text, SpecialTokenParsing::kAll),
            (Triples{{kNoToken, 0, 1}, {abc_control, 1, 6}, {kNoToken, 6, 7}, {ab_control, 7, 11}}));
  // kUserDefined: control tokens are text, so the user-defined spelling of <ab> wins.
  EXPECT_EQ(Split(matcher, text, SpecialTokenParsing::kUserDefined),
            (Triples{{kNoToken, 0, 1}, {ab_user, 1, 5}, {kNoToken, 5, 7}, {ab_user, 7, 11}}));
  // A shorter special is kept when the longer one is cut off by the end of the text.
  EXPECT_EQ(Split(matcher, "<ab", SpecialTokenParsing::kAll), (Triples{{a_user, 0, 2}, {kNoToken, 2, 3}}));
  EXPECT_EQ(Split(matcher, text, SpecialTokenParsing::kNone), (Triples{{kNoToken, 0, 11}}));
  EXPECT_EQ(Split(matcher, "", SpecialTokenParsing::kAll), Triples{});
}

TEST(SpecialTokenMatcherTest, DoesNotReferToTheVocabAfterConstruction) {
  auto vocab = std::make_unique<Vocab>();
  vocab->tokens = {"a", "<|eot|>"};
  vocab->types = {TokenType::kNormal, TokenType::kControl};
  const SpecialTokenMatcher matcher(*vocab);
  vocab.reset();
  EXPECT_EQ(Split(matcher, "a<|eot|>", SpecialTokenParsing::kAll), (Triples{{kNoToken, 0, 1}, {1, 1, 8}}));
}

std::filesystem::path VectorsDir() {
  const char* shared = std::getenv("BITFLEET_SHARED_DIR");
  return std::filesystem::path(shared != nullptr ? shared : "../shared") / "tokenizer-vectors";
}

// The real special tokens of every vocabulary in the tokenizer vectors, in texts made of their
// pieces, glued with the vectors' own test inputs.
TEST(SpecialTokenMatcherTest, RealVocabulariesMatchReference) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(VectorsDir(), ec)) {
    if (entry.path().extension() == ".gguf") files.push_back(entry.path());
  }
  if (files.empty()) GTEST_SKIP() << "no tokenizer vectors in " << VectorsDir();
  std::sort(files.begin(), files.end());
  Rng rng(7);
  for (const fs::path& file : files) {
    auto tok = LoadTokenizerFromGguf(file.string());
    ASSERT_TRUE(tok.ok()) << file << ": " << tok.status();
    const Vocab& vocab = (*tok)->vocab();
    Vocab specials;  // just the special tokens, to build texts from
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
      const TokenType type = vocab.types[i];
      if (type == TokenType::kControl || type == TokenType::kUnknown || type == TokenType::kUserDefined) {
        specials.tokens.push_back(vocab.tokens[i]);
        specials.types.push_back(type);
      }
    }
    ASSERT_FALSE(specials.tokens.empty()) << file;
    specials.tokens.push_back("hello world, <|im_start|>\n\t  ");
    specials.types.push_back(TokenType::kNormal);
    const SpecialTokenMatcher matcher(vocab);
    const ReferenceMatcher reference(vocab);
    for (int t = 0; t < 300; ++t) {
      const std::string text = RandomText(rng, specials, kAlphabet.size());
      for (const SpecialTokenParsing parsing : kAllParsings) {
        ASSERT_EQ(Split(matcher, text, parsing), Split(reference, text, parsing))
            << file << " text '" << Printable(text) << "' parsing " << static_cast<int>(parsing);
      }
    }
  }
}

// Seconds one call of `fn` takes.
template <typename Fn>
double SecondsOf(Fn fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Llama 3's 256 reserved tokens against 1 MiB of '<', the byte they all start with: the
// reference compares all 256 at every position (256 M comparisons, ~0.5 s on a 2024 x86 core);
// the trie looks at two bytes per position (~5 ms). An absolute bound that the reference
// would fail (it takes well under 2 s) would be a flaky benchmark, so the check is relative
// with a wide margin: the trie, best of 5 runs, must be 10x faster than one reference run.
TEST(SpecialTokenMatcherTest, MebibyteAgainst256SpecialsIsLinear) {
  Vocab vocab;
  for (int i = 0; i < 256; ++i) {
    vocab.tokens.push_back("<|reserved_special_token_" + std::to_string(i) + "|>");
    vocab.types.push_back(TokenType::kControl);
  }
  const SpecialTokenMatcher matcher(vocab);
  const ReferenceMatcher reference(vocab);
  const std::string text(size_t{1} << 20, '<');
  const Triples expected = {{kNoToken, 0, int64_t{1} << 20}};
  std::vector<Fragment> fragments;
  double trie_seconds = 1e300;
  for (int run = 0; run < 5; ++run) {
    fragments.clear();
    trie_seconds = std::min(trie_seconds, SecondsOf([&] {
      matcher.Partition(text, SpecialTokenParsing::kAll, &fragments);
    }));
    ASSERT_EQ(ToTriples(fragments), expected);
  }
  fragments.clear();
  const double reference_seconds = SecondsOf([&] {
    reference.Partition(text, SpecialTokenParsing::kAll, &fragments);
  });
  ASSERT_EQ(ToTriples(fragments), expected);
  EXPECT_LT(trie_seconds, 1.0);
  EXPECT_LT(trie_seconds * 10, reference_seconds)
      << "trie " << trie_seconds << " s, reference " << reference_seconds << " s";
}

}  // namespace
}  // namespace bitfleet::tokenizer

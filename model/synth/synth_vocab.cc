#include "model/synth/synth_vocab.h"

#include <string_view>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace bitfleet::synth {
namespace {

// U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's word-boundary marker, in UTF-8.
constexpr char kSpaceMarker[] = "\xE2\x96\x81";

// Common English words, most frequent first (a fixed list: changing it changes every synthetic
// model's tokenizer, so only append).
constexpr std::string_view kWords[] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or",
    "had", "by", "not", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all",
    "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which", "do",
    "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would",
    "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look",
    "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my",
    "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now",
    "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where",
    "after", "back", "little", "only", "round", "man", "year", "came", "show", "every", "good",
    "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence", "great",
    "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean", "before",
    "move", "right", "boy", "old", "too", "same", "tell", "does", "set", "three", "want", "air",
    "well", "also", "play", "small", "end", "put", "home", "read", "hand", "port", "large",
    "spell", "add", "even", "land", "here", "must", "big", "high", "such", "follow", "act",
    "why", "ask", "men", "change", "went", "light", "kind", "off", "need", "house", "picture",
    "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self", "earth",
    "father", "head", "stand", "own", "page", "should", "country", "found", "answer", "school",
    "grow", "study", "still", "learn", "plant", "cover", "food", "sun", "four", "between",
    "state", "keep", "eye", "never", "last", "let", "thought", "city", "tree", "cross", "farm",
    "hard", "start", "might", "story", "saw", "far", "sea", "draw", "left", "late", "run",
    "while", "press", "close", "night", "real", "life", "few", "north", "open", "seem",
    "together", "next", "white", "children", "begin", "got", "walk", "example", "ease", "paper",
    "group", "always", "music", "those", "both", "mark", "often", "letter", "until", "mile",
    "river", "car", "feet", "care", "second", "book", "carry", "took", "science", "eat", "room",
    "friend", "began", "idea", "fish", "mountain", "stop", "once", "base", "hear", "horse",
    "cut", "sure", "watch", "color", "face", "wood", "main", "enough", "plain", "girl", "usual",
    "young", "ready", "above", "ever", "red", "list", "though", "feel", "talk", "bird", "soon",
    "body", "dog", "family", "direct", "pose", "leave", "song", "measure", "door", "product",
    "black", "short", "numeral", "class", "wind", "question", "happen", "complete", "ship",
    "area", "half", "rock", "order", "fire", "south", "problem", "piece", "told", "knew",
    "pass", "since", "top", "whole", "king", "space", "heard", "best", "hour", "better", "true",
    "during", "hundred", "five", "remember", "step", "early", "hold", "west", "ground",
    "interest", "reach", "fast", "verb", "sing", "listen", "six", "table", "travel", "less",
    "morning", "ten", "simple", "several", "vowel", "toward", "war", "lay", "against",
    "pattern", "slow", "center", "love", "person", "money", "serve", "appear", "road", "map",
    "rain", "rule", "govern", "pull", "cold", "notice", "voice", "unit", "power", "town", "fine",
    "certain", "fly", "fall", "lead", "cry", "dark", "machine", "note", "wait", "plan", "figure",
    "star", "box", "noun", "field", "rest", "correct", "able", "pound", "done", "beauty",
    "drive", "stood", "contain", "front", "teach", "week", "final", "gave", "green", "oh",
    "quick", "develop", "ocean", "warm", "free", "minute", "strong", "special", "mind",
    "behind", "clear", "tail", "produce", "fact", "street", "inch", "multiply", "nothing",
    "course", "stay", "wheel", "full", "force", "blue", "object", "decide", "surface", "deep",
    "moon", "island", "foot", "system", "busy", "test", "record", "boat", "common", "gold",
    "possible", "plane", "stead", "dry", "wonder", "laugh", "thousand", "ago", "ran", "check",
    "game", "shape", "equate", "hot", "miss", "brought", "heat", "snow", "tire", "bring", "yes",
    "distant", "fill", "east", "paint", "language", "among", "upon", "princess",
    "dragon", "happy", "sad", "smile", "cat", "ball", "tiny", "model", "token", "text",
};

// Adds `piece` unless present. Returns false when the vocabulary is full.
class VocabBuilder {
 public:
  VocabBuilder(SynthVocab& vocab, uint32_t n_vocab) : vocab_(vocab), n_vocab_(n_vocab) {}

  bool full() const { return vocab_.tokens.size() >= n_vocab_; }

  void Add(std::string piece, TokenType type, float score) {
    if (full() || !seen_.insert(piece).second) return;
    vocab_.tokens.push_back(std::move(piece));
    vocab_.scores.push_back(score);
    vocab_.types.push_back(static_cast<int32_t>(type));
  }

  // A NORMAL piece; scores fall by one per piece so earlier pieces win merges. Called only
  // after the special and byte tokens are in.
  void AddNormal(std::string piece) {
    const float score = -static_cast<float>(vocab_.tokens.size() - kSpecialAndByteTokens);
    Add(std::move(piece), TokenType::kNormal, score);
  }

 private:
  SynthVocab& vocab_;
  uint32_t n_vocab_;
  std::unordered_set<std::string> seen_;
};

// Appends every lowercase string of `length` letters, in lexicographic order, with and without
// the space marker, until the vocabulary is full.
void AddLetterStrings(VocabBuilder& builder, int length) {
  for (bool prefixed : {true, false}) {
    std::string letters(length, 'a');
    while (!builder.full()) {
      builder.AddNormal(prefixed ? absl::StrCat(kSpaceMarker, letters) : letters);
      int i = length - 1;  // odometer increment
      while (i >= 0 && letters[i] == 'z') letters[i--] = 'a';
      if (i < 0) break;
      ++letters[i];
    }
  }
}

}  // namespace

StatusOr<SynthVocab> BuildSynthVocab(uint32_t n_vocab) {
  if (n_vocab < kSpecialAndByteTokens) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", n_vocab, " tokens cannot hold the ",
                                                   kSpecialAndByteTokens, " special and byte tokens"));
  }
  SynthVocab vocab;
  vocab.tokens.reserve(n_vocab);
  vocab.scores.reserve(n_vocab);
  vocab.types.reserve(n_vocab);
  VocabBuilder builder(vocab, n_vocab);
  builder.Add("<unk>", TokenType::kUnknown, 0.0f);
  builder.Add("<s>", TokenType::kControl, 0.0f);
  builder.Add("</s>", TokenType::kControl, 0.0f);
  for (int b = 0; b < 256; ++b) builder.Add(absl::StrFormat("<0x%02X>", b), TokenType::kByte, 0.0f);

  builder.AddNormal(kSpaceMarker);
  for (char c = '!'; c <= '~'; ++c) builder.AddNormal(std::string(1, c));
  for (std::string_view word : kWords) {
    // Every prefix of "▁word", shortest first, so pair merges can build the word.
    for (size_t len = 1; len <= word.size(); ++len) {
      builder.AddNormal(absl::StrCat(kSpaceMarker, std::string(word.substr(0, len))));
    }
  }
  for (int length = 1; !builder.full(); ++length) AddLetterStrings(builder, length);
  return vocab;
}

void WriteTokenizer(const SynthVocab& vocab, gguf::GgufWriter& writer) {
  writer.SetString("tokenizer.ggml.model", "llama");
  writer.Set("tokenizer.ggml.tokens", gguf::Value::StringArray(vocab.tokens));
  writer.Set("tokenizer.ggml.scores", gguf::Value::F32Array(vocab.scores));
  writer.Set("tokenizer.ggml.token_type", gguf::Value::I32Array(vocab.types));
  writer.SetU32("tokenizer.ggml.bos_token_id", kBosId);
  writer.SetU32("tokenizer.ggml.eos_token_id", kEosId);
  writer.SetU32("tokenizer.ggml.unknown_token_id", kUnkId);
  writer.SetBool("tokenizer.ggml.add_bos_token", true);
  writer.SetBool("tokenizer.ggml.add_eos_token", false);
  writer.SetBool("tokenizer.ggml.add_space_prefix", true);
}

}  // namespace bitfleet::synth

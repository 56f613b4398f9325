// `bitfleet bench tokenizer [--model FILE] [--mb N] [--runs N]`: single-thread tokenizer
// throughput as JSON. The text is a few MB of mixed prose, code, numbers and non-Latin scripts
// generated deterministically here, so runs on different machines tokenize the same bytes.
// Reports MB/s (10^6 bytes of text per second, best of --runs) of wall time, and the same
// from the thread's CPU time ("..._cpu_mb_per_s", steadier on a busy machine), for:
//   encode      the whole text in one Encode call
//   encode_4k   the text as 4 KiB prompts (one Encode call each, the serving pattern)
//   decode      all ids in one Decode call
//   stream      IncrementalDecoder, one Push per token (the streaming pattern)
// Default model: ggml-vocab-gpt-2.gguf (else the first .gguf) in
// $BITFLEET_SHARED_DIR/tokenizer-vectors (../shared when unset).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "model/tokenizer/incremental_decoder.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;
using tokenizer::TokenId;

struct BenchTokenizerFlags {
  std::string model;
  double mb = 4;
  int runs = 3;
};

// xorshift64*: a fixed, portable sequence (std:: distributions differ between libraries).
class Rng {
 public:
  uint64_t Next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545F4914F6CDD1DULL;
  }
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }

 private:
  uint64_t state_ = 0x9E3779B97F4A7C15ULL;
};

template <size_t N>
const char* Pick(Rng& rng, const char* const (&items)[N]) {
  return items[rng.Below(N)];
}

constexpr const char* kWords[] = {
    "the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on",
    "are", "as", "with", "his", "they", "I", "at", "be", "this", "have", "from", "or", "one",
    "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can",
    "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will",
    "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her",
    "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write",
    "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "water",
    "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get",
    "come", "made", "may", "part", "don't", "it's", "we'll", "they're", "tensor", "parallel",
    "inference", "quantization", "throughput", "latency", "bandwidth", "ternary"};
constexpr const char* kPunct[] = {".", ".", ".", ",", ",", "!", "?", ";", ":", " -", "\""};
constexpr const char* kCode[] = {
    "for (int i = 0; i < n; ++i) {\n    sum += x[i] * w[i];\n}\n",
    "def forward(self, x):\n    return self.proj(torch.relu(x)) + x\n",
    "if (status.ok() && count > 0x7f) return absl::InvalidArgumentError(\"bad\");\n",
    "const auto it = std::find_if(v.begin(), v.end(), [](int y) { return y % 3 == 0; });\n",
    "SELECT id, name FROM users WHERE created_at >= '2024-01-01' ORDER BY id;\n",
    "\t\tmatrix[row][col] = alpha * a[row] + beta;   // fused multiply-add\n"};
constexpr const char* kScripts[] = {
    "naïve café résumé über straße ", "Привет, мир! Как дела? ", "你好，世界。今天天气很好。",
    "こんにちは世界、元気ですか。", "안녕하세요 세계 ", "مرحبا بالعالم ", "Γειά σου Κόσμε ",
    "emoji 😀🚀👍🏽 ", "ὅτι ἀρετή ", "नमस्ते दुनिया "};

std::string MixedText(size_t bytes) {
  Rng rng;
  std::string text;
  text.reserve(bytes + 256);
  while (text.size() < bytes) {
    const size_t kind = rng.Below(100);
    if (kind < 70) {  // a sentence of prose
      const size_t n = 5 + rng.Below(16);
      for (size_t i = 0; i < n; ++i) {
        std::string word = Pick(rng, kWords);
        if (i == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
        text += word;
        text += (i + 1 < n) ? " " : Pick(rng, kPunct);
      }
      text += rng.Below(5) == 0 ? "\n\n" : " ";
    } else if (kind < 85) {
      text += Pick(rng, kCode);
    } else if (kind < 95) {
      text += Pick(rng, kScripts);
    } else {
      text += std::to_string(rng.Next() % 1000000) + "." + std::to_string(rng.Below(100)) + " ";
    }
  }
  return text;
}

std::string DefaultModel() {
  namespace fs = std::filesystem;
  const char* shared = std::getenv("BITFLEET_SHARED_DIR");
  const fs::path dir = fs::path(shared != nullptr ? shared : "../shared") / "tokenizer-vectors";
  std::error_code ec;
  if (fs::exists(dir / "ggml-vocab-gpt-2.gguf", ec)) return (dir / "ggml-vocab-gpt-2.gguf").string();
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".gguf") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files.empty() ? std::string() : files.front();
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Seconds {
  double wall = 1e300;
  double cpu = 1e300;
};

// Best (shortest) wall and CPU time of `runs` calls of `fn`; stops at the first error.
template <typename Fn>
StatusOr<Seconds> BestOf(int runs, Fn fn) {
  Seconds best;
  for (int i = 0; i < runs; ++i) {
    const Clock::time_point t0 = Clock::now();
    const double cpu0 = ThreadCpuSeconds();
    BF_RETURN_IF_ERROR(fn());
    best.cpu = std::min(best.cpu, ThreadCpuSeconds() - cpu0);
    best.wall = std::min(best.wall, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

Status RunBenchTokenizer(const BenchTokenizerFlags& flags) {
  const std::string path = flags.model.empty() ? DefaultModel() : flags.model;
  if (path.empty()) return absl::NotFoundError("no --model given and no .gguf in the tokenizer vectors");
  const Clock::time_point load0 = Clock::now();
  BF_ASSIGN_OR_RETURN(auto tok, tokenizer::LoadTokenizerFromGguf(path));
  const double load_s = std::chrono::duration<double>(Clock::now() - load0).count();

  const std::string text = MixedText(static_cast<size_t>(std::max(0.01, flags.mb) * 1e6));
  const int runs = std::max(1, flags.runs);
  const tokenizer::EncodeOptions options = {.add_special = false, .max_input_bytes = text.size()};

  std::vector<TokenId> ids;
  BF_ASSIGN_OR_RETURN(const Seconds encode_s, BestOf(runs, [&]() -> Status {
    BF_ASSIGN_OR_RETURN(ids, tok->Encode(text, options));
    return absl::OkStatus();
  }));
  BF_ASSIGN_OR_RETURN(const Seconds encode_4k_s, BestOf(runs, [&]() -> Status {
    for (size_t pos = 0; pos < text.size(); pos += 4096) {
      BF_ASSIGN_OR_RETURN(auto chunk_ids, tok->Encode(std::string_view(text).substr(pos, 4096), options));
      if (chunk_ids.empty()) return absl::InternalError("empty encoding");
    }
    return absl::OkStatus();
  }));
  std::string decoded;
  BF_ASSIGN_OR_RETURN(const Seconds decode_s, BestOf(runs, [&]() -> Status {
    BF_ASSIGN_OR_RETURN(decoded, tok->Decode(ids));
    return absl::OkStatus();
  }));
  size_t streamed_bytes = 0;
  BF_ASSIGN_OR_RETURN(const Seconds stream_s, BestOf(runs, [&]() -> Status {
    tokenizer::IncrementalDecoder stream(*tok);
    streamed_bytes = 0;
    for (TokenId id : ids) {
      BF_ASSIGN_OR_RETURN(std::string piece, stream.Push(id));
      streamed_bytes += piece.size();
    }
    streamed_bytes += stream.Finish().size();
    return absl::OkStatus();
  }));

  const double mb = text.size() / 1e6;
  const nlohmann::ordered_json out = {
      {"benchmark", "tokenizer"},
      {"model", path},
      {"tokenizer", std::string(tokenizer::TokenizerModelName(tok->model()))},
      {"pre_tokenizer", std::string(tok->pre_tokenizer_name())},
      {"vocab_size", tok->size()},
      {"load_s", load_s},
      {"threads", 1},
      {"runs", runs},
      {"text_bytes", text.size()},
      {"tokens", ids.size()},
      {"bytes_per_token", ids.empty() ? 0.0 : static_cast<double>(text.size()) / ids.size()},
      {"round_trip", decoded == text && streamed_bytes == text.size()},
      {"encode_mb_per_s", mb / encode_s.wall},
      {"encode_4k_mb_per_s", mb / encode_4k_s.wall},
      {"decode_mb_per_s", mb / decode_s.wall},
      {"stream_decode_mb_per_s", mb / stream_s.wall},
      {"encode_cpu_mb_per_s", mb / encode_s.cpu},
      {"encode_4k_cpu_mb_per_s", mb / encode_4k_s.cpu},
      {"decode_cpu_mb_per_s", mb / decode_s.cpu},
      {"stream_decode_cpu_mb_per_s", mb / stream_s.cpu},
  };
  std::cout << out.dump(2) << "\n";
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchTokenizer(CLI::App& bench, int* exit_code) {
  auto flags = std::make_shared<BenchTokenizerFlags>();
  CLI::App* cmd = bench.add_subcommand("tokenizer", "Tokenizer encode/decode MB/s on generated mixed text (JSON)");
  cmd->add_option("--model", flags->model, "GGUF file with a vocabulary (default: a gpt2 vocab from the tokenizer vectors)");
  cmd->add_option("--mb", flags->mb, "Megabytes of text to generate")->capture_default_str();
  cmd->add_option("--runs", flags->runs, "Timed runs per measurement (best is reported)")->capture_default_str();
  cmd->callback([flags, exit_code] {
    const Status status = RunBenchTokenizer(*flags);
    if (!status.ok()) std::fprintf(stderr, "bitfleet bench tokenizer: %s\n", std::string(status.message()).c_str());
    *exit_code = status.ok() ? 0 : 1;
  });
}

}  // namespace bitfleet::tools

// `bitfleet bench kernels`: throughput of the CPU kernels per variant, weight type, shape and
// batch, as JSON, next to the machine's memory roofline (a multi-threaded streaming read).
//
// Matmul GB/s counts the GGUF byte stream of the weight (what a decode step must read per token)
// and packed_gb_s the resident packed bytes actually read; roofline_fraction = packed_gb_s /
// read_gb_s. By default each call uses a different copy of the weight, cycling through enough
// copies to exceed the last-level cache (a model's layers do not fit in cache either); --hot
// reuses one copy.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/matmul_cpu.h"
#include "kernels/matmul.h"
#include "kernels/ref/quant.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct BenchKernelsFlags {
  int threads = 0;
  std::vector<std::string> types = {"tq2_0", "tq1_0", "i2_s", "q4_0", "q4_1", "q8_0", "f16", "bf16", "f32"};
  std::vector<std::string> shapes = {"2560x2560", "6912x2560", "2560x6912"};  // rows x cols
  std::vector<int> batches = {1, 32};
  std::vector<std::string> variants;  // default: every supported variant
  double min_time = 0.3;              // seconds per measurement
  // Decode attention shapes HEADSxKV_HEADSxHEAD_DIMxCONTEXT: the 2B model's, BitNet-700M's.
  std::vector<std::string> attention = {"20x5x128x1024", "16x16x96x256"};
  std::vector<std::string> kv_types = {"f16", "int8"};  // the attention's KV cache elements
  bool hot = false;
  bool json_document = false;
};

constexpr uint64_t kColdBytes = uint64_t{512} << 20;  // weight copies per measurement exceed this

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Seconds per call of fn(): the best of kTrials trials of at least min_time / kTrials seconds
// each (after one warm-up call). The best trial, not the mean, so a shared machine's noise
// (other processes, frequency ramps) does not hide what the kernel can do.
template <typename Fn>
double TimePerCall(double min_time, Fn fn) {
  constexpr int kTrials = 5;
  fn();
  double best = 1e300;
  for (int trial = 0; trial < kTrials; ++trial) {
    int64_t calls = 0;
    const Clock::time_point start = Clock::now();
    double elapsed = 0.0;
    do {
      fn();
      ++calls;
      elapsed = Seconds(start, Clock::now());
    } while (elapsed < min_time / kTrials);
    best = std::min(best, elapsed / static_cast<double>(calls));
  }
  return best;
}

// Sum of `words` 64-bit words: eight independent accumulators, so the loop is bound by loads.
uint64_t SumWordsPortable(const uint64_t* p, uint64_t words) {
  uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (uint64_t i = 0; i + 8 <= words; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  }
  return acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
}

#if defined(__x86_64__)
// The same with 512-bit loads. The load width matters for the roofline: a core keeps a limited
// number of cache-line misses in flight, and with 16-byte loads it issues them too slowly to
// fill that (measured with two threads: ~19 GB/s with SSE2 loads, ~24-26 GB/s with 512-bit
// loads, which is what the kernels use). Only intrinsics in a target-attributed function (no
// inline or template code that could leak AVX-512 into other callers).
__attribute__((target("avx512f"))) uint64_t SumWordsAvx512(const uint64_t* p, uint64_t words) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  uint64_t i = 0;
  for (; i + 32 <= words; i += 32) {
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(p + i + 8));
    a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(p + i + 16));
    a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(p + i + 24));
  }
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
#endif

uint64_t SumWords(const uint64_t* p, uint64_t words) {
#if defined(__x86_64__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) return SumWordsAvx512(p, words);
#endif
  return SumWordsPortable(p, words);
}

// Streaming read bandwidth (GB/s), all threads: each call reads the next kSlice bytes of a
// buffer far larger than any cache, so calls are as short as matmul calls and TimePerCall's
// best-trial rule treats both alike.
double MeasureReadBandwidth(ThreadPool& pool, double min_time) {
  constexpr uint64_t kSlice = uint64_t{16} << 20;
  const uint64_t words = kColdBytes / sizeof(uint64_t);
  const uint64_t slice_words = kSlice / sizeof(uint64_t);
  std::vector<uint64_t> buf(words);
  for (uint64_t i = 0; i < words; ++i) buf[i] = i;
  std::vector<uint64_t> sink(pool.size() * 8);
  uint64_t next = 0;
  const double s = TimePerCall(min_time, [&] {
    const uint64_t* base = buf.data() + next;
    pool.Run([&](int index, int count) {
      const uint64_t begin = slice_words * index / count / 32 * 32;
      const uint64_t end = slice_words * (index + 1) / count / 32 * 32;
      sink[index * 8] += SumWords(base + begin, end - begin);
    });
    next = (next + slice_words) % words;
  });
  return static_cast<double>(kSlice) / s / 1e9;
}

// memcpy bandwidth (GB/s counting bytes read plus bytes written), all threads.
double MeasureCopyBandwidth(ThreadPool& pool, double min_time) {
  const uint64_t bytes = kColdBytes / 2;
  std::vector<uint8_t> src(bytes, 1), dst(bytes, 0);
  const double s = TimePerCall(min_time, [&] {
    pool.Run([&](int index, int count) {
      const uint64_t begin = bytes * index / count;
      const uint64_t end = bytes * (index + 1) / count;
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    });
  });
  return 2.0 * static_cast<double>(bytes) / s / 1e9;
}

StatusOr<std::pair<uint64_t, uint64_t>> ParseShape(const std::string& s) {
  uint64_t rows = 0, cols = 0;
  char x = 0;
  std::istringstream in(s);
  if (!(in >> rows >> x >> cols) || x != 'x' || rows == 0 || cols == 0 || !in.eof()) {
    return absl::InvalidArgumentError("shape '" + s + "' is not ROWSxCOLS");
  }
  return std::make_pair(rows, cols);
}

// Random weights of `type` in GGUF bytes (through the reference quantizer).
StatusOr<std::vector<uint8_t>> RandomWeights(DType type, uint64_t rows, uint64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::uniform_int_distribution<int> trit(-1, 1);
  std::vector<float> values(rows * cols);
  for (float& v : values) v = IsTernary(type) ? 0.05f * static_cast<float>(trit(rng)) : normal(rng);
  BF_ASSIGN_OR_RETURN(uint64_t size, TensorBytes(type, cols, rows * cols));
  std::vector<uint8_t> bytes(size);
  BF_RETURN_IF_ERROR(kernels::ref::QuantizeTensor(type, values, cols, bytes));
  return bytes;
}

void Emit(const BenchKernelsFlags& flags, json& document, const json& record) {
  if (flags.json_document) {
    document["results"].push_back(record);
  } else {
    std::printf("%s\n", record.dump().c_str());
    std::fflush(stdout);
  }
}

// Decode attention (one query token) over `context` cached positions in 16-position blocks, as
// the engine lays them out (kernels/ops.h), with the cache's elements f16 or int8 (one step per
// KvInt8Group). Each call uses the next of several layers' caches, together larger than the
// cold-bytes bound unless --hot, as the decode step does (it visits 24 or more layers between
// two visits of one cache). gb_s: the cache's K and V bytes (steps included) read per second.
Status BenchAttention(const BenchKernelsFlags& flags, const std::string& shape, bool int8,
                      const std::vector<const kernels::cpu::CpuKernels*>& variants, ThreadPool& pool, json& document) {
  int heads = 0, kv_heads = 0, head_dim = 0, ctx = 0;
  char x1 = 0, x2 = 0, x3 = 0;
  std::istringstream in(shape);
  if (!(in >> heads >> x1 >> kv_heads >> x2 >> head_dim >> x3 >> ctx) || x1 != 'x' || x2 != 'x' || x3 != 'x' ||
      !in.eof() || heads < 1 || kv_heads < 1 || heads % kv_heads != 0 || head_dim < 1 || head_dim > 1024 ||
      ctx < 1 || ctx > (1 << 20)) {
    return absl::InvalidArgumentError("attention shape '" + shape + "' is not HEADSxKV_HEADSxHEAD_DIMxCONTEXT");
  }
  constexpr int kBlock = 16;
  const int blocks = (ctx + kBlock - 1) / kBlock;
  const int group = kernels::KvInt8Group(head_dim);
  const uint64_t layer_elems = static_cast<uint64_t>(blocks) * kBlock * kv_heads * head_dim;
  const uint64_t elem_bytes = int8 ? 1 : sizeof(uint16_t);
  const uint64_t layer_bytes = 2 * layer_elems * elem_bytes + (int8 ? 2 * layer_elems / group * sizeof(float) : 0);
  const uint64_t n_layers = flags.hot ? 1 : std::clamp<uint64_t>(kColdBytes / 4 / layer_bytes + 1, 1, 256);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> bits(0x3000, 0x3c00);  // halves in [0.125, 1]
  std::uniform_int_distribution<int> codes(-127, 127);
  std::uniform_real_distribution<float> steps(0.001f, 0.01f);
  std::vector<uint16_t> k_pool, v_pool;
  std::vector<int8_t> k8_pool, v8_pool;
  std::vector<float> k_steps, v_steps;
  if (int8) {
    k8_pool.resize(layer_elems * n_layers);
    v8_pool.resize(layer_elems * n_layers);
    for (int8_t& c : k8_pool) c = static_cast<int8_t>(codes(rng));
    for (int8_t& c : v8_pool) c = static_cast<int8_t>(codes(rng));
    k_steps.resize(layer_elems / group * n_layers);
    v_steps.resize(k_steps.size());
    for (float& f : k_steps) f = steps(rng);
    for (float& f : v_steps) f = steps(rng);
  } else {
    k_pool.resize(layer_elems * n_layers);
    v_pool.resize(layer_elems * n_layers);
    for (uint16_t& h : k_pool) h = static_cast<uint16_t>(bits(rng));
    for (uint16_t& h : v_pool) h = static_cast<uint16_t>(bits(rng));
  }
  std::vector<int32_t> table(blocks);
  // Blocks in a shuffled order, as a long-running pool hands them out.
  for (int i = 0; i < blocks; ++i) table[i] = i;
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<float> q(static_cast<size_t>(heads) * head_dim, 0.01f), att(q.size());
  std::vector<float> scratch(static_cast<size_t>(pool.size()) * kernels::AttentionScratchFloats(ctx - 1, 1));
  for (const auto* k : variants) {
    uint64_t layer = 0;
    const double s = TimePerCall(flags.min_time, [&] {
      kernels::PagedKv kv{nullptr, nullptr, kBlock, kv_heads, head_dim, blocks};
      if (int8) {
        kv.k8 = k8_pool.data() + layer * layer_elems;
        kv.v8 = v8_pool.data() + layer * layer_elems;
        kv.k_steps = k_steps.data() + layer * layer_elems / group;
        kv.v_steps = v_steps.data() + layer * layer_elems / group;
      } else {
        kv.k = k_pool.data() + layer * layer_elems;
        kv.v = v_pool.data() + layer * layer_elems;
      }
      kernels::cpu::AttentionPagedWith(*k, q.data(), 1, heads, kv, table.data(), ctx - 1, 0.088f, att.data(),
                                       scratch.data(), &pool);
      layer = (layer + 1) % n_layers;
    });
    const double kv_bytes = static_cast<double>(ctx) * kv_heads * head_dim *
                            (2.0 * static_cast<double>(elem_bytes) + (int8 ? 2.0 * sizeof(float) / group : 0.0));
    Emit(flags, document,
         {{"kernel", "attention_decode"},
          {"variant", k->name},
          {"kv_type", int8 ? "int8" : "f16"},
          {"heads", heads},
          {"kv_heads", kv_heads},
          {"head_dim", head_dim},
          {"context", ctx},
          {"threads", pool.size()},
          {"cold", !flags.hot},
          {"us_per_call", s * 1e6},
          {"gb_s", kv_bytes / s / 1e9}});
  }
  return absl::OkStatus();
}

Status RunBenchKernels(const BenchKernelsFlags& flags) {
  const int threads = flags.threads > 0 ? flags.threads : std::max(1u, std::thread::hardware_concurrency());
  ThreadPool pool(threads);
  std::vector<const kernels::cpu::CpuKernels*> variants;
  if (flags.variants.empty()) {
    for (auto v : {kernels::cpu::CpuVariant::kAmx, kernels::cpu::CpuVariant::kAvx512Vnni, kernels::cpu::CpuVariant::kAvx2,
                   kernels::cpu::CpuVariant::kScalar}) {
      if (const auto* k = kernels::cpu::KernelsFor(v)) variants.push_back(k);
    }
  } else {
    for (const std::string& name : flags.variants) {
      const auto v = kernels::cpu::ParseCpuVariant(name);
      if (!v) return absl::InvalidArgumentError("unknown variant '" + name + "' (scalar|avx2|avx512vnni|amx)");
      const auto* k = kernels::cpu::KernelsFor(*v);
      if (k == nullptr) return absl::FailedPreconditionError("this CPU cannot run variant " + name);
      variants.push_back(k);
    }
  }
  std::vector<DType> types;
  for (const std::string& name : flags.types) {
    if (name == "none") continue;  // attention only
    const DTypeInfo* info = FindDTypeByName(name);
    if (info == nullptr) return absl::InvalidArgumentError("unknown type '" + name + "'");
    types.push_back(info->type);
  }
  std::vector<std::pair<uint64_t, uint64_t>> shapes;
  for (const std::string& s : flags.shapes) {
    BF_ASSIGN_OR_RETURN(auto shape, ParseShape(s));
    shapes.push_back(shape);
  }
  for (int b : flags.batches) {
    if (b < 1 || b > 4096) return absl::InvalidArgumentError("--batch values must be in 1..4096");
  }

  json document = {{"threads", threads}, {"dispatch", kernels::CpuVariantName()}, {"results", json::array()}};
  const double read_gb_s = MeasureReadBandwidth(pool, flags.min_time);
  const double copy_gb_s = MeasureCopyBandwidth(pool, flags.min_time);
  json roofline = {{"kernel", "roofline"}, {"threads", threads}, {"read_gb_s", read_gb_s}, {"copy_gb_s", copy_gb_s}};
  if (flags.json_document) {
    document["roofline"] = roofline;
  } else {
    std::printf("%s\n", roofline.dump().c_str());
  }

  std::mt19937 rng(7);
  const int max_batch = *std::max_element(flags.batches.begin(), flags.batches.end());
  for (DType type : types) {
    for (const auto& [rows, cols] : shapes) {
      auto bytes = RandomWeights(type, rows, cols, rng);
      if (!bytes.ok()) {
        Logger("bench")->warn("skipping {} {}x{}: {}", DTypeName(type), rows, cols, bytes.status().ToString());
        continue;
      }
      std::vector<std::unique_ptr<kernels::PackedWeight>> copies;
      BF_ASSIGN_OR_RETURN(auto first, kernels::PackWeight(type, cols, rows, *bytes));
      const uint64_t packed_bytes = first->bytes();
      const uint64_t n_copies = flags.hot ? 1 : std::clamp<uint64_t>(kColdBytes / packed_bytes + 1, 1, 256);
      copies.push_back(std::move(first));
      while (copies.size() < n_copies) {
        BF_ASSIGN_OR_RETURN(auto copy, kernels::PackWeight(type, cols, rows, *bytes));
        copies.push_back(std::move(copy));
      }
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(max_batch) * cols);
      for (float& v : x) v = normal(rng);
      std::vector<float> out(static_cast<size_t>(max_batch) * rows);
      kernels::QuantizedActivations scratch;
      scratch.Reserve(max_batch, cols);
      for (const auto* k : variants) {
        for (int batch : flags.batches) {
          size_t next = 0;
          const double s = TimePerCall(flags.min_time, [&] {
            kernels::cpu::MatMulWith(*k, *copies[next], x.data(), batch, out.data(), pool, &scratch);
            next = (next + 1) % copies.size();
          });
          const double packed_gb_s = static_cast<double>(packed_bytes) / s / 1e9;
          Emit(flags, document,
               {{"kernel", "matmul"},
                {"variant", k->name},
                {"type", DTypeName(type)},
                {"rows", rows},
                {"cols", cols},
                {"batch", batch},
                {"threads", threads},
                {"cold", !flags.hot},
                {"us_per_call", s * 1e6},
                {"gb_s", static_cast<double>(copies[0]->stream_bytes()) / s / 1e9},
                {"packed_gb_s", packed_gb_s},
                {"gop_s", 2.0 * static_cast<double>(rows * cols) * batch / s / 1e9},
                {"roofline_fraction", packed_gb_s / read_gb_s}});
        }
      }
    }
  }

  for (const std::string& shape : flags.attention) {
    if (shape == "none") continue;  // matmuls (or the roofline) only
    for (const std::string& kv_type : flags.kv_types) {
      BF_RETURN_IF_ERROR(BenchAttention(flags, shape, kv_type == "int8", variants, pool, document));
    }
  }
  if (flags.json_document) std::printf("%s\n", document.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchKernels(CLI::App& bench, int* exit_code) {
  auto flags = std::make_shared<BenchKernelsFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "kernels", "CPU kernel throughput per variant, type, shape and batch (JSON: GB/s, GOP/s, roofline fraction)");
  cmd->add_option("-t,--threads", flags->threads, "Threads (default: all hardware threads)");
  cmd->add_option("--types", flags->types, "Weight types (none: no matmuls)")->delimiter(',')->capture_default_str();
  cmd->add_option("--shapes", flags->shapes, "Matrix shapes ROWSxCOLS")->delimiter(',')->capture_default_str();
  cmd->add_option("--batch", flags->batches, "Tokens per call")->delimiter(',')->capture_default_str();
  cmd->add_option("--variants", flags->variants, "scalar|avx2|avx512vnni|amx (default: all this CPU runs)")->delimiter(',');
  cmd->add_option("--min-time", flags->min_time, "Seconds per measurement")->capture_default_str();
  cmd->add_option("--attention", flags->attention, "Decode attention shapes HEADSxKV_HEADSxHEAD_DIMxCONTEXT (none: no attention)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--kv-types", flags->kv_types, "KV cache element types of the attention shapes")
      ->delimiter(',')
      ->check(CLI::IsMember({"f16", "int8"}))
      ->capture_default_str();
  cmd->add_flag("--hot", flags->hot, "Reuse one weight copy (cache-resident) instead of cycling cold copies");
  cmd->add_flag("--json", flags->json_document, "Print one JSON document at the end instead of JSON lines");
  cmd->callback([flags, exit_code] {
    const Status status = RunBenchKernels(*flags);
    if (!status.ok()) Logger("bench")->error("{}", status.ToString());
    *exit_code = status.ok() ? 0 : 1;
  });
}

}  // namespace bitfleet::tools

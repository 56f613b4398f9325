// `bench gpu`: throughput of the CUDA kernels and of a whole decode step of the `large`
// (BitNet b1.58 2B-shaped) model, as JSON lines, against the device's measured copy bandwidth.
// Registered by the standalone `bitfleet-bench-gpu` (tools/bench_gpu_main.cc), which links only
// the kernels, so scripts/gpu-check.sh can carry it to a GPU machine without the server's
// libraries; RegisterBenchGpu can also hang it under `bitfleet bench`.
//
// Method (what the numbers mean):
// - copy_gb_s: cudaMemcpyAsync device to device of 1 GiB, counting bytes read plus written.
// - matmul entries: each call reads a different copy of the weight (copies totalling 256 MiB
//   or more, several times the L2), launched back to back inside one CUDA graph; us_per_call is
//   the median over replays. packed_gb_s = bytes the kernel reads (codes + scales) / time;
//   gb_s = GGUF bytes / time; roofline_fraction = packed_gb_s / copy_gb_s.
// - matvec_2b_layers: batch-1 mat-vecs over the matrices of 30 distinct layers of the 2B shape
//   (fused QKV and gate/up, or the 7 separate matrices), one graph: the weight stream of a
//   decode step. Its roofline_fraction is the headline mat-vec figure.
// - decode_step: the whole forward pass of one decode step (30 BitNet layers: norms, int8
//   activation quantization, Q/K/V/O/gate/up/down matmuls, RoPE, KV write, paged attention over
//   `context` cached positions per sequence, squared-ReLU gate, sub-norms, residuals; final norm,
//   LM head and arg-max), timed as a CUDA graph and as plain launches. roofline_tok_s = batch /
//   (bytes the step must read / copy bandwidth).
// Weights are random codes in the runtime layout (timing depends on bytes, not values); never
// zeros (zeros can run faster than real data).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "core/logging.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/cuda_graph.h"
#include "kernels/cuda/cuda_matmul.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launch_options.h"
#include "kernels/cuda/ops_launch.h"
#include "kernels/cuda/sampling_launch.h"
#include "kernels/matmul.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"

namespace bitfleet::tools {
namespace {

namespace kc = kernels::cuda;
using nlohmann::json;

struct BenchGpuFlags {
  std::vector<std::string> types = {"tq2_0", "q4_0", "q4_1", "q8_0", "f16"};
  std::vector<std::string> shapes = {"2560x2560", "6912x2560", "2560x6912", "3840x2560", "13824x2560"};
  std::vector<int> batches = {1, 32};
  std::vector<std::string> layer_types = {"tq2_0", "q4_0"};
  std::vector<std::string> decode_types = {"tq2_0"};
  std::vector<int> decode_batches = {1, 32};
  std::vector<int> decode_fused_norms = {0, 1};  // decode entries without / with fused norm kernels
  // Mat-vec overlap settings the layer stream is measured with, each "pdl|nopdl:none|lines|bulk:N"
  // (kernels/cuda/matmul_launch.h QuantMatVecOptions); "default" is the library's default;
  // "chain" runs the stream as one LaunchQuantMatVecChain (grid barriers instead of launches).
  std::vector<std::string> matvec_options = {"default"};
  // Single-token mat-vec kernels the batch-1 matmul and layer-stream entries are measured with
  // (QuantMatVecOptions::kernel): general, lean, tc.
  std::vector<std::string> matvec_kernels = {"general"};
  std::string head_type = "f16";
  int context = 512;
  int reps = 20;
  bool json_document = false;
};

constexpr uint64_t kColdBytes = uint64_t{256} << 20;

// The `large` preset (model/synth/presets.cc: microsoft/bitnet-b1.58-2B-4T's config).
struct LargeModel {
  static constexpr int kVocab = 128256;
  static constexpr int kEmbd = 2560;
  static constexpr int kLayers = 30;
  static constexpr int kHeads = 20;
  static constexpr int kKvHeads = 5;
  static constexpr int kHeadDim = 128;
  static constexpr int kFf = 6912;
  static constexpr float kRopeBase = 500000.0f;
  static constexpr float kEps = 1e-5f;
};

Status Cuda(cudaError_t error, const char* what) { return kc::CudaStatus(error, what); }

// 64 random bits per call (SplitMix64): fast enough to fill hundreds of MiB.
struct FastRng {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  void Fill(uint8_t* p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const uint64_t v = Next();
      std::memcpy(p + i, &v, 8);
    }
    for (; i < n; ++i) p[i] = static_cast<uint8_t>(Next());
  }
  // A random fp16 value of magnitude in [2^-7, 2^-6) (never zero, inf or NaN).
  uint16_t Half() { return static_cast<uint16_t>((Next() & 0x83ffu) | 0x2000u); }
  float Uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(Next() >> 40) * 0x1.0p-24f; }
};

// A weight image in the runtime layout filled with random codes and plausible scales.
StatusOr<kc::CudaWeightImage> RandomImage(DType type, int64_t rows, int64_t cols, FastRng& rng) {
  kc::CudaWeightImage img;
  img.type = type;
  img.rows = rows;
  img.cols = cols;
  BF_ASSIGN_OR_RETURN(img.stream_bytes, TensorBytes(type, static_cast<uint64_t>(cols), static_cast<uint64_t>(rows * cols)));
  switch (type) {
    case DType::kTQ1_0:
    case DType::kTQ2_0:
    case DType::kI2_S:
      img.format = kc::QuantFormat::kTernary;
      break;
    case DType::kQ4_0:
      img.format = kc::QuantFormat::kQ4_0;
      break;
    case DType::kQ4_1:
      img.format = kc::QuantFormat::kQ4_1;
      break;
    case DType::kQ8_0:
      img.format = kc::QuantFormat::kQ8_0;
      break;
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16: {
      img.float_format = type == DType::kF32 ? kc::FloatFormat::kF32
                                              : (type == DType::kF16 ? kc::FloatFormat::kF16 : kc::FloatFormat::kBF16);
      img.row_stride = (cols + 7) / 8 * 8;
      const size_t n = static_cast<size_t>(rows * img.row_stride);
      if (type == DType::kF32) {
        img.data.resize(n * 4);
        for (size_t i = 0; i < n; ++i) {
          const float f = rng.Uniform(-0.05f, 0.05f);
          std::memcpy(img.data.data() + 4 * i, &f, 4);
        }
      } else {
        img.data.resize(n * 2);
        for (size_t i = 0; i < n; ++i) {
          const uint16_t h = type == DType::kF16 ? rng.Half() : FloatToBf16(rng.Uniform(-0.05f, 0.05f));
          std::memcpy(img.data.data() + 2 * i, &h, 2);
        }
      }
      return img;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("no CUDA kernel for ", DTypeName(type)));
  }
  img.quantized = true;
  img.n_groups = (rows + kc::kRowGroup - 1) / kc::kRowGroup;
  img.n_steps = (cols + kc::StepElems(img.format) - 1) / kc::StepElems(img.format);
  img.n_blocks = img.n_steps * kc::BlocksPerStep(img.format);
  img.data.resize(static_cast<size_t>(img.n_groups * img.n_steps) * kc::kGroupStepBytes);
  rng.Fill(img.data.data(), img.data.size());
  const size_t n_scales = static_cast<size_t>(img.n_groups * img.n_blocks) * kc::kRowGroup;
  if (img.format == kc::QuantFormat::kTernary) {
    img.scales.resize(n_scales);
    for (float& s : img.scales) s = rng.Uniform(0.01f, 0.05f);
  } else {
    img.half_d.resize(n_scales);
    for (uint16_t& h : img.half_d) h = rng.Half() & 0x7fffu;
    if (img.format == kc::QuantFormat::kQ4_1) {
      img.half_m.resize(n_scales);
      for (uint16_t& h : img.half_m) h = rng.Half();
    }
  }
  return img;
}

// Device floats with random values in [-1, 1).
StatusOr<kc::DeviceBuffer> RandomFloats(size_t n, FastRng& rng) {
  std::vector<float> host(n);
  for (float& f : host) f = rng.Uniform(-1.0f, 1.0f);
  BF_ASSIGN_OR_RETURN(kc::DeviceBuffer buf, kc::DeviceBuffer::Allocate(n * sizeof(float)));
  BF_RETURN_IF_ERROR(buf.Upload(host.data(), n * sizeof(float)));
  return buf;
}

// Median milliseconds of `reps` timed runs of `run` (which enqueues on `stream`), after 3
// warm-up runs. Timed with events around each run.
template <typename Fn>
StatusOr<double> MedianMs(cudaStream_t stream, int reps, Fn run) {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  BF_RETURN_IF_ERROR(Cuda(cudaEventCreate(&start), "event"));
  BF_RETURN_IF_ERROR(Cuda(cudaEventCreate(&stop), "event"));
  std::vector<double> times;
  Status status;
  for (int i = 0; i < reps + 3 && status.ok(); ++i) {
    status.Update(Cuda(cudaEventRecord(start, stream), "event record"));
    status.Update(run());
    status.Update(Cuda(cudaEventRecord(stop, stream), "event record"));
    status.Update(Cuda(cudaEventSynchronize(stop), "event sync"));
    float ms = 0.0f;
    status.Update(Cuda(cudaEventElapsedTime(&ms, start, stop), "event elapsed"));
    if (i >= 3) times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  BF_RETURN_IF_ERROR(status);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

StatusOr<double> MeasureCopyGbS(cudaStream_t stream, int reps) {
  constexpr size_t kBytes = size_t{1} << 30;
  BF_ASSIGN_OR_RETURN(kc::DeviceBuffer src, kc::DeviceBuffer::Allocate(kBytes));
  BF_ASSIGN_OR_RETURN(kc::DeviceBuffer dst, kc::DeviceBuffer::Allocate(kBytes));
  BF_RETURN_IF_ERROR(Cuda(cudaMemset(src.get(), 0x5a, kBytes), "memset"));
  BF_ASSIGN_OR_RETURN(const double ms, MedianMs(stream, reps, [&] {
    return Cuda(cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, stream), "copy");
  }));
  return 2.0 * kBytes / (ms * 1e-3) / 1e9;
}

// One matmul call on `w` with the activations prepared for it.
Status LaunchMatMul(const kc::CudaWeight& w, const kc::ActivationView& q, const float* x, int n_tokens, float* out,
                    cudaStream_t stream) {
  if (w.quantized()) return kc::MatMulQuantizedCuda(w, q, out, stream);
  return Cuda(kc::LaunchFloatMatMul(w.float_view(), x, n_tokens, out, stream), "float matmul");
}

// Shared activations for matmul benchmarks: random floats and their int8 form (at `scaling`, the
// ActScalingFor of the weights they multiply).
struct BenchActivations {
  kc::DeviceBuffer x;
  std::unique_ptr<kc::CudaActivations> scratch;
  kc::ActivationView view;
  kc::DeviceBuffer out;
};

StatusOr<BenchActivations> MakeActivations(int n_tokens, int64_t cols, int64_t max_rows,
                                           kernels::ActScaling scaling, FastRng& rng, cudaStream_t stream) {
  BenchActivations a;
  BF_ASSIGN_OR_RETURN(a.x, RandomFloats(static_cast<size_t>(n_tokens) * cols, rng));
  BF_ASSIGN_OR_RETURN(a.scratch, kc::CudaActivations::Create(n_tokens, static_cast<uint64_t>(cols)));
  BF_ASSIGN_OR_RETURN(a.view, kc::QuantizeActivationsCuda(a.x.as<float>(), n_tokens, static_cast<uint64_t>(cols),
                                                          scaling, nullptr, *a.scratch, stream));
  BF_ASSIGN_OR_RETURN(a.out, kc::DeviceBuffer::Allocate(static_cast<size_t>(n_tokens) * max_rows * sizeof(float)));
  return a;
}

StatusOr<kc::MatVecKernel> ParseMatVecKernel(const std::string& name) {
  if (name == "general") return kc::MatVecKernel::kGeneral;
  if (name == "lean") return kc::MatVecKernel::kLean;
  if (name == "tc") return kc::MatVecKernel::kTensorCore;
  return absl::InvalidArgumentError("mat-vec kernel '" + name + "' is not general, lean or tc");
}

// Whether mat-vec kernel `name` has its own code for weights of `type` (the tensor-core one is
// ternary only; other types run the general kernel under it, measured already).
bool MatVecKernelApplies(const std::string& name, DType type) { return name != "tc" || IsTernary(type); }

const char* MatVecKernelName(kc::MatVecKernel kernel) {
  switch (kernel) {
    case kc::MatVecKernel::kLean:
      return "lean";
    case kc::MatVecKernel::kTensorCore:
      return "tc";
    case kc::MatVecKernel::kGeneral:
      break;
  }
  return "general";
}

const char* PathName(const kc::CudaWeight& w, int n_tokens) {
  if (!w.quantized()) {
    return n_tokens <= kc::kFloatMatVecMaxTokens || w.type() == DType::kF32 ? "float-matvec" : "tf32-mma";
  }
  if (n_tokens > kc::kMatVecMaxTokens) return "int8-mma";
  if (n_tokens > 1) return "dp4a-matvec";
  switch (kc::GetQuantMatVecOptions().kernel) {
    case kc::MatVecKernel::kLean:
      return "dp4a-matvec-lean";
    case kc::MatVecKernel::kTensorCore:
      return w.quant_view().format == kc::QuantFormat::kTernary ? "int8-mma-matvec" : "dp4a-matvec";
    case kc::MatVecKernel::kGeneral:
      break;
  }
  return "dp4a-matvec";
}

// The matmul entries of one type and shape: one per single-token kernel of flags.matvec_kernels
// that covers the type (batch 1, quantized weights; labelled matvec_kernel), else one entry. Every
// kernel runs over the same uploaded weight copies; the library's options are restored.
StatusOr<json> BenchMatMul(DType type, int64_t rows, int64_t cols, int n_tokens, double copy_gb_s,
                           const BenchGpuFlags& flags, FastRng& rng, cudaStream_t stream) {
  BF_ASSIGN_OR_RETURN(const kc::CudaWeightImage img, RandomImage(type, rows, cols, rng));
  const uint64_t packed = img.packed_bytes();
  const int copies = static_cast<int>(std::clamp<uint64_t>((kColdBytes + packed - 1) / packed, 4, 512));
  std::vector<std::unique_ptr<kc::CudaWeight>> weights;
  for (int i = 0; i < copies; ++i) {
    BF_ASSIGN_OR_RETURN(std::unique_ptr<kc::CudaWeight> w, kc::CudaWeight::Upload(img));
    weights.push_back(std::move(w));
  }
  BF_ASSIGN_OR_RETURN(BenchActivations a,
                      MakeActivations(n_tokens, cols, rows, kernels::ActScalingFor(type), rng, stream));
  auto enqueue_all = [&]() -> Status {
    for (const auto& w : weights) {
      BF_RETURN_IF_ERROR(LaunchMatMul(*w, a.view, a.x.as<float>(), n_tokens, a.out.as<float>(), stream));
    }
    return absl::OkStatus();
  };
  auto measure = [&]() -> StatusOr<json> {
    kc::CudaGraph graph;
    BF_RETURN_IF_ERROR(graph.Capture(stream, enqueue_all));
    BF_ASSIGN_OR_RETURN(const double graph_ms, MedianMs(stream, flags.reps, [&] { return graph.Launch(stream); }));
    BF_ASSIGN_OR_RETURN(const double stream_ms, MedianMs(stream, flags.reps, enqueue_all));
    const double s = graph_ms * 1e-3 / copies;
    const double packed_gb_s = static_cast<double>(packed) / s / 1e9;
    return json{{"kernel", "matmul"},
                {"type", DTypeName(type)},
                {"rows", rows},
                {"cols", cols},
                {"batch", n_tokens},
                {"path", PathName(*weights[0], n_tokens)},
                {"copies", copies},
                {"us_per_call", s * 1e6},
                {"us_per_call_no_graph", stream_ms * 1e3 / copies},
                {"packed_bytes", packed},
                {"packed_gb_s", packed_gb_s},
                {"gb_s", static_cast<double>(img.stream_bytes) / s / 1e9},
                {"tops", 2.0 * rows * cols * n_tokens / s / 1e12},
                {"roofline_fraction", packed_gb_s / copy_gb_s}};
  };
  // The kernel choice matters only to single-token quantized mat-vecs.
  if (n_tokens != 1 || type == DType::kF16 || type == DType::kBF16 || type == DType::kF32) {
    BF_ASSIGN_OR_RETURN(json entry, measure());
    return json::array({std::move(entry)});
  }
  const kc::QuantMatVecOptions saved = kc::GetQuantMatVecOptions();
  json entries = json::array();
  Status status;
  for (const std::string& name : flags.matvec_kernels) {
    if (!MatVecKernelApplies(name, type)) continue;
    StatusOr<kc::MatVecKernel> kernel = ParseMatVecKernel(name);
    if (!kernel.ok()) {
      status = kernel.status();
      break;
    }
    kc::QuantMatVecOptions options = saved;
    options.kernel = *kernel;
    kc::SetQuantMatVecOptions(options);
    StatusOr<json> entry = measure();
    if (!entry.ok()) {
      status = entry.status();
      break;
    }
    (*entry)["matvec_kernel"] = name;
    entries.push_back(*std::move(entry));
  }
  kc::SetQuantMatVecOptions(saved);
  BF_RETURN_IF_ERROR(status);
  return entries;
}

const char* PrefetchName(kc::WeightPrefetch p) {
  switch (p) {
    case kc::WeightPrefetch::kNone:
      return "none";
    case kc::WeightPrefetch::kLines:
      return "lines";
    case kc::WeightPrefetch::kBulk:
      return "bulk";
  }
  return "?";
}

// A layer-stream setting: the mat-vec options and whether launches are dependent (PDL).
struct MatVecSetting {
  kc::QuantMatVecOptions options;
  bool dependent_launches = true;
};

// "default" or "pdl|nopdl:none|lines|bulk:BLOCKS".
StatusOr<MatVecSetting> ParseMatVecSetting(const std::string& text, const MatVecSetting& defaults) {
  if (text == "default") return defaults;
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  MatVecSetting setting;
  kc::QuantMatVecOptions& o = setting.options;
  bool ok = parts.size() == 3 && (parts[0] == "pdl" || parts[0] == "nopdl");
  if (ok) {
    setting.dependent_launches = parts[0] == "pdl";
    if (parts[1] == "none") {
      o.prefetch = kc::WeightPrefetch::kNone;
    } else if (parts[1] == "lines") {
      o.prefetch = kc::WeightPrefetch::kLines;
    } else if (parts[1] == "bulk") {
      o.prefetch = kc::WeightPrefetch::kBulk;
    } else {
      ok = false;
    }
    ok = ok && absl::SimpleAtoi(parts[2], &o.prefetch_blocks) && o.prefetch_blocks > 0;
  }
  if (!ok) {
    return absl::InvalidArgumentError("mat-vec options '" + text +
                                      "' are not default or pdl|nopdl:none|lines|bulk:BLOCKS");
  }
  return setting;
}

void ApplyMatVecSetting(const MatVecSetting& s) {
  kc::SetQuantMatVecOptions(s.options);
  kc::SetDependentLaunches(s.dependent_launches);
}

json MatVecSettingJson(const MatVecSetting& s) {
  return json{{"matvec_kernel", MatVecKernelName(s.options.kernel)},
              {"dependent_launch", s.dependent_launches},
              {"prefetch", PrefetchName(s.options.prefetch)},
              {"prefetch_blocks", s.options.prefetch_blocks}};
}

// Batch-1 mat-vecs over 30 layers' worth of distinct 2B-shaped matrices: the decode weight stream.
StatusOr<json> BenchLayerStream(DType type, bool fused, double copy_gb_s, const BenchGpuFlags& flags, FastRng& rng,
                                cudaStream_t stream) {
  using M = LargeModel;
  const int kv_rows = M::kKvHeads * M::kHeadDim;
  std::vector<std::pair<int64_t, int64_t>> shapes;  // rows, cols
  if (fused) {
    shapes = {{M::kEmbd + 2 * kv_rows, M::kEmbd}, {M::kEmbd, M::kEmbd}, {2 * M::kFf, M::kEmbd}, {M::kEmbd, M::kFf}};
  } else {
    shapes = {{M::kEmbd, M::kEmbd}, {kv_rows, M::kEmbd}, {kv_rows, M::kEmbd}, {M::kEmbd, M::kEmbd},
              {M::kFf, M::kEmbd},   {M::kFf, M::kEmbd},  {M::kEmbd, M::kFf}};
  }
  std::vector<kc::CudaWeightImage> images;
  for (const auto& [rows, cols] : shapes) {
    BF_ASSIGN_OR_RETURN(kc::CudaWeightImage img, RandomImage(type, rows, cols, rng));
    images.push_back(std::move(img));
  }
  std::vector<std::unique_ptr<kc::CudaWeight>> weights;
  uint64_t packed = 0;
  for (int layer = 0; layer < M::kLayers; ++layer) {
    for (const kc::CudaWeightImage& img : images) {
      BF_ASSIGN_OR_RETURN(std::unique_ptr<kc::CudaWeight> w, kc::CudaWeight::Upload(img));
      packed += w->bytes();
      weights.push_back(std::move(w));
    }
  }
  const kernels::ActScaling scaling = kernels::ActScalingFor(type);
  BF_ASSIGN_OR_RETURN(BenchActivations a_embd, MakeActivations(1, M::kEmbd, 2 * M::kFf, scaling, rng, stream));
  BF_ASSIGN_OR_RETURN(BenchActivations a_ff, MakeActivations(1, M::kFf, M::kEmbd, scaling, rng, stream));
  auto enqueue_all = [&]() -> Status {
    for (const auto& w : weights) {
      const BenchActivations& a = w->cols() == M::kFf ? a_ff : a_embd;
      BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*w, a.view, a.out.as<float>(), stream));
    }
    return absl::OkStatus();
  };
  // One entry per mat-vec setting; the library's settings are restored afterwards.
  const MatVecSetting defaults{kc::GetQuantMatVecOptions(), kc::DependentLaunchesEnabled()};
  json entries = json::array();
  Status status;
  for (const std::string& text : flags.matvec_options) {
    if (text == "chain") {
      // Every mat-vec of the stream in one cooperative launch, a grid barrier between them.
      std::vector<kc::MatVecChainLink> links;
      for (const auto& w : weights) {
        const BenchActivations& a = w->cols() == M::kFf ? a_ff : a_embd;
        links.push_back({w->quant_view(), a.view, a.out.as<float>()});
        if (!kc::QuantMatVecLinkValid(links.back(), links[0].w.format)) {
          status = absl::InternalError("invalid mat-vec chain link");
          break;
        }
      }
      if (!status.ok()) break;
      StatusOr<kc::DeviceBuffer> links_dev = kc::DeviceBuffer::Allocate(links.size() * sizeof(kc::MatVecChainLink));
      if (!links_dev.ok()) {
        status = links_dev.status();
        break;
      }
      status = links_dev->Upload(links.data(), links.size() * sizeof(kc::MatVecChainLink));
      auto launch_chain = [&] {
        return Cuda(kc::LaunchQuantMatVecChain(links[0].w.format, links_dev->as<kc::MatVecChainLink>(),
                                               static_cast<int>(links.size()), stream),
                    "mat-vec chain");
      };
      // One launch: a graph adds nothing, and not every driver captures cooperative launches.
      StatusOr<double> ms = status.ok() ? MedianMs(stream, flags.reps, launch_chain) : StatusOr<double>(status);
      if (!ms.ok()) {
        status = ms.status();
        break;
      }
      const double packed_gb_s = static_cast<double>(packed) / (*ms * 1e-3) / 1e9;
      entries.push_back(json{{"kernel", "matvec_2b_layers"}, {"type", DTypeName(type)}, {"fused", fused},
                             {"layers", M::kLayers}, {"launches", 1}, {"ms", *ms}, {"packed_bytes", packed},
                             {"packed_gb_s", packed_gb_s}, {"roofline_fraction", packed_gb_s / copy_gb_s},
                             {"options", text}, {"matvec_kernel", "general"}});  // the chain's kernel
      continue;
    }
    StatusOr<MatVecSetting> parsed = ParseMatVecSetting(text, defaults);
    if (!parsed.ok()) {
      status = parsed.status();
      break;
    }
    // The setting once per single-token kernel of flags.matvec_kernels, over the same weights.
    for (const std::string& name : flags.matvec_kernels) {
      if (!MatVecKernelApplies(name, type)) continue;
      StatusOr<kc::MatVecKernel> kernel = ParseMatVecKernel(name);
      if (!kernel.ok()) {
        status = kernel.status();
        break;
      }
      MatVecSetting setting = *parsed;
      setting.options.kernel = *kernel;
      ApplyMatVecSetting(setting);
      kc::CudaGraph graph;
      status = graph.Capture(stream, enqueue_all);
      StatusOr<double> ms = status.ok() ? MedianMs(stream, flags.reps, [&] { return graph.Launch(stream); })
                                        : StatusOr<double>(status);
      if (!ms.ok()) {
        status = ms.status();
        break;
      }
      const double packed_gb_s = static_cast<double>(packed) / (*ms * 1e-3) / 1e9;
      json entry = {{"kernel", "matvec_2b_layers"},     {"type", DTypeName(type)},   {"fused", fused},
                    {"layers", M::kLayers},             {"launches", weights.size()}, {"ms", *ms},
                    {"packed_bytes", packed},           {"packed_gb_s", packed_gb_s},
                    {"roofline_fraction", packed_gb_s / copy_gb_s}, {"options", text}};
      entry.update(MatVecSettingJson(setting));
      entries.push_back(std::move(entry));
    }
    if (!status.ok()) break;
  }
  ApplyMatVecSetting(defaults);
  BF_RETURN_IF_ERROR(status);
  return entries;
}

// ---- a whole decode step of the large model ----------------------------------------------

struct DeviceLayer {
  std::unique_ptr<kc::CudaWeight> q, k, v, o, gate, up, down;
  kc::DeviceBuffer attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm;
};

class DecodeBench {
 public:
  using M = LargeModel;

  static StatusOr<std::unique_ptr<DecodeBench>> Create(DType type, DType head_type, int batch, int context,
                                                       FastRng& rng, cudaStream_t stream);
  // Enqueues one decode step for `batch` sequences at position `context`.
  Status Enqueue(cudaStream_t stream);
  uint64_t BytesPerStep() const { return weight_bytes_ + kv_bytes_; }
  uint64_t weight_bytes() const { return weight_bytes_; }
  // Token ids of the last step (for a sanity check that the chain ran).
  StatusOr<std::vector<int64_t>> Tokens() const;
  // The last step's logits (batch × vocab), after the stream is synchronized.
  StatusOr<std::vector<float>> Logits() const;
  // Restores the residual stream to the step's initial input (each step adds into it).
  Status ResetInput(cudaStream_t stream);
  // Norms fused with the quantization after them (and the residual add / gate before them):
  // 7 kernels fewer per layer, the same logits bit for bit.
  void set_fused_norms(bool fused) { fused_norms_ = fused; }

 private:
  DecodeBench() = default;
  Status EnqueueFused(cudaStream_t stream);
  // RoPE on the step's q and k, the KV write and attention of layer l into attn_.
  Status EnqueueAttention(int l, const kc::PagedKvBatch& kv_batch, cudaStream_t stream);
  bool fused_norms_ = false;
  int batch_ = 1;
  int context_ = 0;
  std::vector<DeviceLayer> layers_;
  std::unique_ptr<kc::CudaWeight> head_;
  kc::DeviceBuffer out_norm_;
  std::unique_ptr<kernels::PagedKv[]> kv_views_;
  struct KvPool {
    kc::DeviceBuffer k, v;
  };
  std::vector<KvPool> kv_;
  kc::DeviceBuffer attention_ws_;
  int64_t attention_ws_floats_ = 0;
  kc::DeviceBuffer x0_, x_, h_, qb_, kb_, vb_, attn_, o_, gate_, up_, logits_, best_v_, best_i_;
  kc::DeviceBuffer positions_, token_seq_, block_tables_;
  int max_blocks_ = 0;
  std::unique_ptr<kc::CudaActivations> acts_;
  uint64_t weight_bytes_ = 0;
  uint64_t kv_bytes_ = 0;
};

StatusOr<std::unique_ptr<DecodeBench>> DecodeBench::Create(DType type, DType head_type, int batch, int context,
                                                           FastRng& rng, cudaStream_t stream) {
  auto b = std::unique_ptr<DecodeBench>(new DecodeBench());
  b->batch_ = batch;
  b->context_ = context;
  const int kv_rows = M::kKvHeads * M::kHeadDim;
  // One random image per matrix shape, uploaded once per layer (distinct device copies).
  BF_ASSIGN_OR_RETURN(const kc::CudaWeightImage q_img, RandomImage(type, M::kEmbd, M::kEmbd, rng));
  BF_ASSIGN_OR_RETURN(const kc::CudaWeightImage kv_img, RandomImage(type, kv_rows, M::kEmbd, rng));
  BF_ASSIGN_OR_RETURN(const kc::CudaWeightImage up_img, RandomImage(type, M::kFf, M::kEmbd, rng));
  BF_ASSIGN_OR_RETURN(const kc::CudaWeightImage down_img, RandomImage(type, M::kEmbd, M::kFf, rng));
  for (int l = 0; l < M::kLayers; ++l) {
    DeviceLayer layer;
    BF_ASSIGN_OR_RETURN(layer.q, kc::CudaWeight::Upload(q_img));
    BF_ASSIGN_OR_RETURN(layer.k, kc::CudaWeight::Upload(kv_img));
    BF_ASSIGN_OR_RETURN(layer.v, kc::CudaWeight::Upload(kv_img));
    BF_ASSIGN_OR_RETURN(layer.o, kc::CudaWeight::Upload(q_img));
    BF_ASSIGN_OR_RETURN(layer.gate, kc::CudaWeight::Upload(up_img));
    BF_ASSIGN_OR_RETURN(layer.up, kc::CudaWeight::Upload(up_img));
    BF_ASSIGN_OR_RETURN(layer.down, kc::CudaWeight::Upload(down_img));
    for (const auto* w : {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down}) {
      b->weight_bytes_ += (*w)->bytes();
    }
    BF_ASSIGN_OR_RETURN(layer.attn_norm, RandomFloats(M::kEmbd, rng));
    BF_ASSIGN_OR_RETURN(layer.attn_sub_norm, RandomFloats(M::kEmbd, rng));
    BF_ASSIGN_OR_RETURN(layer.ffn_norm, RandomFloats(M::kEmbd, rng));
    BF_ASSIGN_OR_RETURN(layer.ffn_sub_norm, RandomFloats(M::kFf, rng));
    b->layers_.push_back(std::move(layer));
  }
  BF_ASSIGN_OR_RETURN(const kc::CudaWeightImage head_img, RandomImage(head_type, M::kVocab, M::kEmbd, rng));
  BF_ASSIGN_OR_RETURN(b->head_, kc::CudaWeight::Upload(head_img));
  b->weight_bytes_ += b->head_->bytes();
  BF_ASSIGN_OR_RETURN(b->out_norm_, RandomFloats(M::kEmbd, rng));

  // Paged KV: sequence s owns blocks [s * max_blocks, (s + 1) * max_blocks), filled with random
  // halves; every sequence decodes position `context`.
  constexpr int kBlock = 16;
  b->max_blocks_ = (context + 1 + kBlock - 1) / kBlock;
  const int num_blocks = batch * b->max_blocks_;
  const size_t pool_elems = static_cast<size_t>(num_blocks) * kBlock * kv_rows;
  std::vector<uint16_t> random_halves(pool_elems);
  for (uint16_t& h : random_halves) h = rng.Half();
  b->kv_views_ = std::make_unique<kernels::PagedKv[]>(M::kLayers);
  for (int l = 0; l < M::kLayers; ++l) {
    KvPool pool;
    BF_ASSIGN_OR_RETURN(pool.k, kc::DeviceBuffer::Allocate(pool_elems * 2));
    BF_ASSIGN_OR_RETURN(pool.v, kc::DeviceBuffer::Allocate(pool_elems * 2));
    BF_RETURN_IF_ERROR(pool.k.Upload(random_halves.data(), pool_elems * 2));
    BF_RETURN_IF_ERROR(pool.v.Upload(random_halves.data(), pool_elems * 2));
    b->kv_views_[l] = kernels::PagedKv{pool.k.as<uint16_t>(), pool.v.as<uint16_t>(), kBlock, M::kKvHeads,
                                       M::kHeadDim, num_blocks};
    b->kv_.push_back(std::move(pool));
  }
  b->kv_bytes_ = static_cast<uint64_t>(batch) * (context + 1) * M::kLayers * 2 * kv_rows * sizeof(uint16_t);

  std::vector<int32_t> positions(batch, context), seqs(batch), tables(static_cast<size_t>(num_blocks));
  for (int s = 0; s < batch; ++s) seqs[s] = s;
  for (int i = 0; i < num_blocks; ++i) tables[i] = i;
  BF_ASSIGN_OR_RETURN(b->positions_, kc::DeviceBuffer::Allocate(batch * sizeof(int32_t)));
  BF_RETURN_IF_ERROR(b->positions_.Upload(positions.data(), batch * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(b->token_seq_, kc::DeviceBuffer::Allocate(batch * sizeof(int32_t)));
  BF_RETURN_IF_ERROR(b->token_seq_.Upload(seqs.data(), batch * sizeof(int32_t)));
  BF_ASSIGN_OR_RETURN(b->block_tables_, kc::DeviceBuffer::Allocate(tables.size() * sizeof(int32_t)));
  BF_RETURN_IF_ERROR(b->block_tables_.Upload(tables.data(), tables.size() * sizeof(int32_t)));

  const size_t n = static_cast<size_t>(batch);
  BF_ASSIGN_OR_RETURN(b->x0_, RandomFloats(n * M::kEmbd, rng));
  BF_ASSIGN_OR_RETURN(b->x_, kc::DeviceBuffer::Allocate(n * M::kEmbd * sizeof(float)));
  BF_RETURN_IF_ERROR(b->ResetInput(stream));
  BF_ASSIGN_OR_RETURN(b->h_, kc::DeviceBuffer::Allocate(n * M::kFf * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->qb_, kc::DeviceBuffer::Allocate(n * M::kEmbd * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->kb_, kc::DeviceBuffer::Allocate(n * kv_rows * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->vb_, kc::DeviceBuffer::Allocate(n * kv_rows * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->attn_, kc::DeviceBuffer::Allocate(n * M::kEmbd * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->o_, kc::DeviceBuffer::Allocate(n * M::kEmbd * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->gate_, kc::DeviceBuffer::Allocate(n * M::kFf * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->up_, kc::DeviceBuffer::Allocate(n * M::kFf * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->logits_, kc::DeviceBuffer::Allocate(n * M::kVocab * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->best_v_, kc::DeviceBuffer::Allocate(n * sizeof(float)));
  BF_ASSIGN_OR_RETURN(b->best_i_, kc::DeviceBuffer::Allocate(n * sizeof(int64_t)));
  BF_ASSIGN_OR_RETURN(b->acts_, kc::CudaActivations::Create(batch, M::kFf));
  b->attention_ws_floats_ = kc::AttentionSplitWorkspaceFloats(batch, M::kHeads, M::kHeadDim, context + 1);
  if (b->attention_ws_floats_ > 0) {
    BF_ASSIGN_OR_RETURN(b->attention_ws_,
                        kc::DeviceBuffer::Allocate(static_cast<size_t>(b->attention_ws_floats_) * sizeof(float)));
  }
  BF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream), "setup"));
  return b;
}

Status DecodeBench::EnqueueAttention(int l, const kc::PagedKvBatch& kv_batch, cudaStream_t s) {
  const int n = batch_;
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRope(qb_.as<float>(), positions_.as<int32_t>(), n, M::kHeads, M::kHeadDim,
                                         M::kHeadDim, M::kRopeBase, true, s),
                          "rope q"));
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRope(kb_.as<float>(), positions_.as<int32_t>(), n, M::kKvHeads, M::kHeadDim,
                                         M::kHeadDim, M::kRopeBase, true, s),
                          "rope k"));
  BF_RETURN_IF_ERROR(
      Cuda(kc::LaunchWriteKv(kv_views_[l], kv_batch, n, kb_.as<float>(), vb_.as<float>(), s), "kv write"));
  return Cuda(kc::LaunchAttentionPagedSplit(qb_.as<float>(), n, M::kHeads, kv_views_[l], kv_batch,
                                            1.0f / std::sqrt(static_cast<float>(M::kHeadDim)), context_ + 1,
                                            attention_ws_.as<float>(), attention_ws_floats_, attn_.as<float>(), s),
              "attention");
}

Status DecodeBench::EnqueueFused(cudaStream_t s) {
  const int n = batch_;
  float* x = x_.as<float>();
  const kc::PagedKvBatch kv_batch{token_seq_.as<int32_t>(), positions_.as<int32_t>(), block_tables_.as<int32_t>(),
                                  max_blocks_};
  // Every layer matrix has the bench's one type: the fused kernels quantize at its scaling.
  const kernels::ActScaling scaling = kernels::ActScalingFor(layers_[0].q->type());
  const bool per_block = scaling == kernels::ActScaling::kPerBlock;
  BF_ASSIGN_OR_RETURN(const kc::ActivationView embd, acts_->View(n, M::kEmbd, scaling));
  BF_ASSIGN_OR_RETURN(const kc::ActivationView ff, acts_->View(n, M::kFf, scaling));
  int8_t* q = acts_->q();
  float* absmax = acts_->absmax();
  int32_t* sums = acts_->sums();
  float* steps = acts_->block_steps();
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormQuantize(x, layers_[0].attn_norm.as<float>(), n, M::kEmbd, M::kEps,
                                                    per_block, embd.stride, q, absmax, sums, steps, s),
                          "norm + quantize"));
  for (int l = 0; l < M::kLayers; ++l) {
    const DeviceLayer& L = layers_[l];
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.q, embd, qb_.as<float>(), s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.k, embd, kb_.as<float>(), s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.v, embd, vb_.as<float>(), s));
    BF_RETURN_IF_ERROR(EnqueueAttention(l, kv_batch, s));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormQuantize(attn_.as<float>(), L.attn_sub_norm.as<float>(), n, M::kEmbd,
                                                      M::kEps, per_block, embd.stride, q, absmax, sums, steps, s),
                            "sub norm + quantize"));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.o, embd, o_.as<float>(), s));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAddRmsNormQuantize(x, o_.as<float>(), L.ffn_norm.as<float>(), n, M::kEmbd,
                                                         M::kEps, per_block, embd.stride, q, absmax, sums, steps, s),
                            "residual + norm + quantize"));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.gate, embd, gate_.as<float>(), s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.up, embd, up_.as<float>(), s));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRelu2MulRmsNormQuantize(gate_.as<float>(), up_.as<float>(),
                                                              L.ffn_sub_norm.as<float>(), n, M::kFf, M::kEps,
                                                              per_block, ff.stride, q, absmax, sums, steps, s),
                            "relu2 + sub norm + quantize"));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.down, ff, o_.as<float>(), s));
    if (l + 1 < M::kLayers) {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchAddRmsNormQuantize(x, o_.as<float>(), layers_[l + 1].attn_norm.as<float>(), n,
                                                           M::kEmbd, M::kEps, per_block, embd.stride, q, absmax, sums,
                                                           steps, s),
                              "residual + norm + quantize"));
    } else {
      BF_RETURN_IF_ERROR(Cuda(kc::LaunchAdd(x, o_.as<float>(), int64_t{n} * M::kEmbd, x, s), "residual"));
    }
  }
  float* h = h_.as<float>();
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, out_norm_.as<float>(), n, M::kEmbd, M::kEps, h, s), "output norm"));
  BF_RETURN_IF_ERROR(kc::MatMulCuda(*head_, h, n, logits_.as<float>(), acts_.get(), s));
  kc::LogitRows rows{logits_.as<float>(), n, M::kVocab, M::kVocab, 0};
  return Cuda(kc::LaunchArgMax(rows, best_v_.as<float>(), best_i_.as<int64_t>(), s), "argmax");
}

Status DecodeBench::Enqueue(cudaStream_t s) {
  if (fused_norms_) return EnqueueFused(s);
  const int n = batch_;
  float* x = x_.as<float>();
  float* h = h_.as<float>();
  const kc::PagedKvBatch kv_batch{token_seq_.as<int32_t>(), positions_.as<int32_t>(), block_tables_.as<int32_t>(),
                                  max_blocks_};
  auto quantized_matmul = [&](const kc::CudaWeight& w, const float* in, float* out) -> Status {
    BF_ASSIGN_OR_RETURN(const kc::ActivationView v,
                        kc::QuantizeActivationsCuda(in, n, static_cast<uint64_t>(w.cols()),
                                                    kernels::ActScalingFor(w.type()), nullptr, *acts_, s));
    return kc::MatMulQuantizedCuda(w, v, out, s);
  };
  for (int l = 0; l < M::kLayers; ++l) {
    const DeviceLayer& L = layers_[l];
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, L.attn_norm.as<float>(), n, M::kEmbd, M::kEps, h, s), "norm"));
    BF_ASSIGN_OR_RETURN(const kc::ActivationView hv, kc::QuantizeActivationsCuda(h, n, M::kEmbd,
                                                                             kernels::ActScalingFor(L.q->type()),
                                                                             nullptr, *acts_, s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.q, hv, qb_.as<float>(), s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.k, hv, kb_.as<float>(), s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.v, hv, vb_.as<float>(), s));
    BF_RETURN_IF_ERROR(EnqueueAttention(l, kv_batch, s));
    BF_RETURN_IF_ERROR(Cuda(
        kc::LaunchRmsNorm(attn_.as<float>(), L.attn_sub_norm.as<float>(), n, M::kEmbd, M::kEps, attn_.as<float>(), s),
        "sub norm"));
    BF_RETURN_IF_ERROR(quantized_matmul(*L.o, attn_.as<float>(), o_.as<float>()));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAdd(x, o_.as<float>(), int64_t{n} * M::kEmbd, x, s), "residual"));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, L.ffn_norm.as<float>(), n, M::kEmbd, M::kEps, h, s), "norm"));
    BF_ASSIGN_OR_RETURN(const kc::ActivationView fv, kc::QuantizeActivationsCuda(h, n, M::kEmbd,
                                                                             kernels::ActScalingFor(L.gate->type()),
                                                                             nullptr, *acts_, s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.gate, fv, gate_.as<float>(), s));
    BF_RETURN_IF_ERROR(kc::MatMulQuantizedCuda(*L.up, fv, up_.as<float>(), s));
    BF_RETURN_IF_ERROR(Cuda(
        kc::LaunchRelu2Mul(gate_.as<float>(), up_.as<float>(), int64_t{n} * M::kFf, gate_.as<float>(), s), "relu2"));
    BF_RETURN_IF_ERROR(Cuda(
        kc::LaunchRmsNorm(gate_.as<float>(), L.ffn_sub_norm.as<float>(), n, M::kFf, M::kEps, gate_.as<float>(), s),
        "sub norm"));
    BF_RETURN_IF_ERROR(quantized_matmul(*L.down, gate_.as<float>(), o_.as<float>()));
    BF_RETURN_IF_ERROR(Cuda(kc::LaunchAdd(x, o_.as<float>(), int64_t{n} * M::kEmbd, x, s), "residual"));
  }
  BF_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNorm(x, out_norm_.as<float>(), n, M::kEmbd, M::kEps, h, s), "output norm"));
  BF_RETURN_IF_ERROR(kc::MatMulCuda(*head_, h, n, logits_.as<float>(), acts_.get(), s));
  kc::LogitRows rows{logits_.as<float>(), n, M::kVocab, M::kVocab, 0};
  return Cuda(kc::LaunchArgMax(rows, best_v_.as<float>(), best_i_.as<int64_t>(), s), "argmax");
}

Status DecodeBench::ResetInput(cudaStream_t stream) {
  return Cuda(cudaMemcpyAsync(x_.get(), x0_.get(), static_cast<size_t>(batch_) * M::kEmbd * sizeof(float),
                              cudaMemcpyDeviceToDevice, stream),
              "reset input");
}

StatusOr<std::vector<float>> DecodeBench::Logits() const {
  std::vector<float> logits(static_cast<size_t>(batch_) * M::kVocab);
  BF_RETURN_IF_ERROR(logits_.Download(logits.data(), logits.size() * sizeof(float)));
  return logits;
}

// Runs one step from the initial input with dependent launches as given, returns its logits.
StatusOr<std::vector<float>> StepLogits(DecodeBench& bench, bool dependent_launches, cudaStream_t stream) {
  const bool before = kc::DependentLaunchesEnabled();
  kc::SetDependentLaunches(dependent_launches);
  Status status = bench.ResetInput(stream);
  if (status.ok()) status = bench.Enqueue(stream);
  kc::SetDependentLaunches(before);
  BF_RETURN_IF_ERROR(status);
  BF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream), "step"));
  return bench.Logits();
}

StatusOr<std::vector<int64_t>> DecodeBench::Tokens() const {
  std::vector<int64_t> ids(batch_);
  BF_RETURN_IF_ERROR(best_i_.Download(ids.data(), ids.size() * sizeof(int64_t)));
  return ids;
}

StatusOr<json> BenchDecode(DType type, DType head_type, int batch, bool fused_norms, const BenchGpuFlags& flags,
                           double copy_gb_s, FastRng& rng, cudaStream_t stream) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<DecodeBench> bench,
                      DecodeBench::Create(type, head_type, batch, flags.context, rng, stream));
  if (fused_norms) {
    // The fused kernels must give the unfused step's logits bit for bit.
    BF_ASSIGN_OR_RETURN(const std::vector<float> unfused, StepLogits(*bench, false, stream));
    bench->set_fused_norms(true);
    BF_ASSIGN_OR_RETURN(const std::vector<float> fused, StepLogits(*bench, false, stream));
    if (std::memcmp(fused.data(), unfused.data(), fused.size() * sizeof(float)) != 0) {
      return absl::InternalError("decode step logits differ with and without fused norms");
    }
  }
  BF_ASSIGN_OR_RETURN(const double stream_ms, MedianMs(stream, flags.reps, [&] { return bench->Enqueue(stream); }));
  kc::CudaGraph graph;
  BF_RETURN_IF_ERROR(graph.Capture(stream, [&] { return bench->Enqueue(stream); }));
  BF_ASSIGN_OR_RETURN(const double graph_ms, MedianMs(stream, flags.reps, [&] { return graph.Launch(stream); }));
  BF_ASSIGN_OR_RETURN(const std::vector<int64_t> tokens, bench->Tokens());
  for (int64_t t : tokens) {
    if (t < 0 || t >= LargeModel::kVocab) return absl::InternalError("decode step produced an invalid token id");
  }
  // A kernel that read its input before its predecessor finished would make dependent launches
  // change the result: the step must give the same logits bit for bit either way.
  BF_ASSIGN_OR_RETURN(const std::vector<float> with_pdl, StepLogits(*bench, true, stream));
  BF_ASSIGN_OR_RETURN(const std::vector<float> without_pdl, StepLogits(*bench, false, stream));
  if (std::memcmp(with_pdl.data(), without_pdl.data(), with_pdl.size() * sizeof(float)) != 0) {
    return absl::InternalError("decode step logits differ with and without dependent launches");
  }
  const double ms = std::min(graph_ms, stream_ms);
  const double roofline_ms = static_cast<double>(bench->BytesPerStep()) / (copy_gb_s * 1e9) * 1e3;
  return json{{"kernel", "decode_step"},
              {"model", "large"},
              {"type", DTypeName(type)},
              {"head_type", DTypeName(head_type)},
              {"batch", batch},
              {"context", flags.context},
              {"fused_norms", fused_norms},
              {"step_ms_graph", graph_ms},
              {"step_ms_no_graph", stream_ms},
              {"tok_s", batch / (ms * 1e-3)},
              {"weight_bytes", bench->weight_bytes()},
              {"bytes_per_step", bench->BytesPerStep()},
              {"roofline_step_ms", roofline_ms},
              {"roofline_tok_s", batch / (roofline_ms * 1e-3)},
              {"roofline_fraction", roofline_ms / ms}};
}

StatusOr<std::pair<int64_t, int64_t>> ParseShape(const std::string& s) {
  int64_t rows = 0, cols = 0;
  char x = 0;
  std::istringstream in(s);
  if (!(in >> rows >> x >> cols) || x != 'x' || rows <= 0 || cols <= 0 || !in.eof()) {
    return absl::InvalidArgumentError("shape '" + s + "' is not ROWSxCOLS");
  }
  return std::make_pair(rows, cols);
}

StatusOr<DType> ParseType(const std::string& name) {
  const DTypeInfo* info = FindDTypeByName(name);
  if (info == nullptr) return absl::InvalidArgumentError("unknown type '" + name + "'");
  return info->type;
}

Status Run(const BenchGpuFlags& flags) {
  std::string reason;
  if (kc::UsableCudaDevices(&reason) == 0) return absl::FailedPreconditionError(reason);
  cudaDeviceProp prop{};
  BF_RETURN_IF_ERROR(Cuda(cudaGetDeviceProperties(&prop, 0), "device properties"));
  cudaStream_t stream = nullptr;
  BF_RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream"));
  std::unique_ptr<CUstream_st, decltype(&cudaStreamDestroy)> stream_owner(stream, cudaStreamDestroy);

  json document = {{"results", json::array()}};
  auto emit = [&](const json& record) {
    if (flags.json_document) {
      document["results"].push_back(record);
    } else {
      std::printf("%s\n", record.dump().c_str());
      std::fflush(stdout);
    }
  };
  BF_ASSIGN_OR_RETURN(const double copy_gb_s, MeasureCopyGbS(stream, flags.reps));
  emit(json{{"kernel", "device"},
            {"name", prop.name},
            {"compute_capability", absl::StrCat(prop.major, ".", prop.minor)},
            {"sms", prop.multiProcessorCount},
            {"memory_gib", static_cast<double>(prop.totalGlobalMem) / (1 << 30)},
            {"l2_mib", static_cast<double>(prop.l2CacheSize) / (1 << 20)},
            {"copy_gb_s", copy_gb_s}});

  FastRng rng{0xB17F1EE7};
  for (const std::string& type_name : flags.types) {
    if (type_name.empty()) continue;  // `--types ""` turns the section off
    BF_ASSIGN_OR_RETURN(const DType type, ParseType(type_name));
    for (const std::string& shape : flags.shapes) {
      BF_ASSIGN_OR_RETURN(const auto rows_cols, ParseShape(shape));
      for (int batch : flags.batches) {
        BF_ASSIGN_OR_RETURN(const json entries,
                            BenchMatMul(type, rows_cols.first, rows_cols.second, batch, copy_gb_s, flags, rng, stream));
        for (const json& r : entries) emit(r);
      }
    }
  }
  for (const std::string& type_name : flags.layer_types) {
    if (type_name.empty()) continue;
    BF_ASSIGN_OR_RETURN(const DType type, ParseType(type_name));
    for (bool fused : {true, false}) {
      BF_ASSIGN_OR_RETURN(const json entries, BenchLayerStream(type, fused, copy_gb_s, flags, rng, stream));
      for (const json& r : entries) emit(r);
    }
  }
  BF_ASSIGN_OR_RETURN(const DType head_type, ParseType(flags.head_type));
  for (const std::string& type_name : flags.decode_types) {
    if (type_name.empty()) continue;
    BF_ASSIGN_OR_RETURN(const DType type, ParseType(type_name));
    for (int batch : flags.decode_batches) {
      for (const int fused : flags.decode_fused_norms) {
        BF_ASSIGN_OR_RETURN(json r, BenchDecode(type, head_type, batch, fused != 0, flags, copy_gb_s, rng, stream));
        emit(r);
      }
    }
  }
  if (flags.json_document) std::printf("%s\n", document.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchGpu(CLI::App& bench, int* exit_code) {
  auto flags = std::make_shared<BenchGpuFlags>();
  CLI::App* cmd = bench.add_subcommand("gpu", "CUDA kernel and decode-step throughput vs copy bandwidth (JSON lines)");
  cmd->add_option("--types", flags->types, "Weight types of the matmul entries (empty: none)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--shapes", flags->shapes, "Matmul shapes ROWSxCOLS")->delimiter(',')->capture_default_str();
  cmd->add_option("--batch", flags->batches, "Tokens per matmul call")->delimiter(',')->capture_default_str();
  cmd->add_option("--layer-types", flags->layer_types, "Types of the 2B layer-stream mat-vec entries")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--decode-types", flags->decode_types, "Layer weight types of the decode-step entries")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--decode-batch", flags->decode_batches, "Sequences per decode step")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--matvec-options", flags->matvec_options,
                  "Mat-vec overlap settings for the layer-stream entries: default, chain (one cooperative "
                  "launch, grid barriers) or pdl|nopdl:none|lines|bulk:PREFETCH_BLOCKS, one "
                  "entry each")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--matvec-kernels", flags->matvec_kernels,
                  "Single-token mat-vec kernels for the batch-1 matmul and layer-stream entries: general, lean "
                  "(addressing hoisted) and/or tc (ternary through int8 mma.sync), one entry each")
      ->delimiter(',')
      ->check(CLI::IsMember({"general", "lean", "tc"}))
      ->capture_default_str();
  cmd->add_option("--decode-fused-norms", flags->decode_fused_norms,
                  "Decode entries with unfused (0) and/or fused (1) norm + quantization kernels")
      ->delimiter(',')
      ->check(CLI::Range(0, 1))
      ->capture_default_str();
  cmd->add_option("--head-type", flags->head_type, "LM head type of the decode step")->capture_default_str();
  cmd->add_option("--context", flags->context, "Cached positions per sequence in the decode step")
      ->check(CLI::Range(0, 32768))
      ->capture_default_str();
  cmd->add_option("--reps", flags->reps, "Timed repetitions per entry (median reported)")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  cmd->add_flag("--json", flags->json_document, "Print one JSON document at the end instead of JSON lines");
  cmd->callback([flags, exit_code] {
    const Status status = Run(*flags);
    if (!status.ok()) {
      Logger("bench")->error("bench gpu: {}", std::string(status.message()));
      *exit_code = 1;
    }
  });
}

}  // namespace bitfleet::tools

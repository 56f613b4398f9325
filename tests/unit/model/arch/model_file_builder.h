// Test helper: builds small in-memory GGUF model files from a ModelConfig, with hooks to drop,
// replace or add tensors and metadata so each test can break exactly one thing.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"

namespace bitfleet::model::testing {

// A tiny valid config of an architecture.
inline ModelConfig TinyConfig(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.arch_name = arch == Arch::kLlama ? "llama" : arch == Arch::kQwen2 ? "qwen2" : "bitnet-b1.58";
  c.name = "tiny";
  c.n_vocab = 32;
  c.n_embd = 16;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.n_ff = 24;
  c.n_ctx_train = 64;
  c.head_dim = 4;
  c.rope_dim = 4;
  c.rope_type = arch == Arch::kLlama ? RopeType::kNorm : RopeType::kNeox;
  c.activation = arch == Arch::kBitnet ? Activation::kRelu2 : Activation::kSilu;
  c.has_sub_norms = arch == Arch::kBitnet;
  c.qkv_bias = arch == Arch::kQwen2;
  c.tied_embeddings = false;
  return c;
}

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> shape;
  DType type = DType::kF32;
};

// Every tensor `config` implies, in ggml shape order.
inline std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  namespace tn = tensor_names;
  const uint64_t e = c.n_embd, v = c.n_vocab, q = c.q_dim(), kv = c.kv_dim(), ff = c.n_ff;
  std::vector<TensorSpec> out = {{tn::kTokenEmbd, {e, v}}, {tn::kOutputNorm, {e}}};
  if (!c.tied_embeddings) out.push_back({tn::kOutput, {e, v}});
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    out.push_back({tn::Layer(l, tn::kAttnNorm), {e}});
    out.push_back({tn::Layer(l, tn::kAttnQ), {e, q}});
    out.push_back({tn::Layer(l, tn::kAttnK), {e, kv}});
    out.push_back({tn::Layer(l, tn::kAttnV), {e, kv}});
    out.push_back({tn::Layer(l, tn::kAttnOutput), {q, e}});
    out.push_back({tn::Layer(l, tn::kFfnNorm), {e}});
    out.push_back({tn::Layer(l, tn::kFfnGate), {e, ff}});
    out.push_back({tn::Layer(l, tn::kFfnUp), {e, ff}});
    out.push_back({tn::Layer(l, tn::kFfnDown), {ff, e}});
    if (c.qkv_bias) {
      out.push_back({tn::Layer(l, tn::kAttnQBias), {q}});
      out.push_back({tn::Layer(l, tn::kAttnKBias), {kv}});
      out.push_back({tn::Layer(l, tn::kAttnVBias), {kv}});
    }
    if (c.has_sub_norms) {
      out.push_back({tn::Layer(l, tn::kAttnSubNorm), {q}});
      out.push_back({tn::Layer(l, tn::kFfnSubNorm), {ff}});
    }
  }
  return out;
}

// A parsed file plus the buffer it points into.
struct BuiltFile {
  std::vector<uint8_t> bytes;
  std::unique_ptr<gguf::GgufFile> file;
};

// Writes `writer` to memory and parses it back; fails the test on any error.
inline BuiltFile Build(const gguf::GgufWriter& writer) {
  BuiltFile built;
  auto bytes = writer.WriteBuffer();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return built;
  built.bytes = std::move(*bytes);
  auto file = gguf::GgufFile::Parse(built.bytes);
  EXPECT_TRUE(file.ok()) << file.status();
  if (file.ok()) built.file = std::move(*file);
  return built;
}

inline void AddZeroTensor(gguf::GgufWriter& writer, const TensorSpec& spec) {
  uint64_t elements = 1;
  for (uint64_t d : spec.shape) elements *= d;
  auto bytes = TensorBytes(spec.type, spec.shape[0], elements);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_TRUE(writer.AddTensor(spec.name, spec.type, spec.shape, std::vector<uint8_t>(*bytes, 0)).ok())
      << spec.name;
}

// A writer holding `config`'s metadata and every expected tensor except those in `skip`,
// with `replace` taking the place of same-named tensors.
inline void FillWriter(gguf::GgufWriter& writer, const ModelConfig& config,
                       const std::set<std::string>& skip = {},
                       const std::vector<TensorSpec>& replace = {}) {
  WriteModelConfig(config, writer);
  for (TensorSpec spec : ExpectedTensors(config)) {
    if (skip.count(spec.name)) continue;
    for (const TensorSpec& r : replace) {
      if (r.name == spec.name) spec = r;
    }
    AddZeroTensor(writer, spec);
  }
}

}  // namespace bitfleet::model::testing

namespace bitfleet::model::testing {

// Copies `src` into a new file without the metadata keys in `drop` and with `set` applied
// (replacing or adding keys). Tensors are copied unchanged.
inline BuiltFile Rewrite(const gguf::GgufFile& src, const std::set<std::string>& drop,
                         const std::vector<gguf::KeyValue>& set = {}) {
  gguf::GgufWriter writer;
  for (const gguf::KeyValue& kv : src.metadata()) {
    if (!drop.count(kv.key) && kv.key != "general.alignment") writer.Set(kv.key, kv.value);
  }
  for (const gguf::KeyValue& kv : set) writer.Set(kv.key, kv.value);
  for (const gguf::TensorInfo& t : src.tensors()) {
    auto data = src.TensorData(t);
    EXPECT_TRUE(writer.AddTensor(t.name, t.type, t.shape, std::vector<uint8_t>(data.begin(), data.end())).ok());
  }
  return Build(writer);
}

// A complete valid file for `config`.
inline BuiltFile BuildModel(const ModelConfig& config, const std::set<std::string>& skip = {},
                            const std::vector<TensorSpec>& replace = {}) {
  gguf::GgufWriter writer;
  FillWriter(writer, config, skip, replace);
  return Build(writer);
}

}  // namespace bitfleet::model::testing

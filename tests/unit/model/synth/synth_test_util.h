// Test helpers shared by the synth and quantize tests: synthesize a model into memory, parse
// it, and decode tensors to floats.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ref/quant.h"
#include "model/gguf/gguf.h"
#include "model/synth/presets.h"
#include "model/synth/synth.h"

namespace bitfleet::synth::testing {

// A serialized model and its parsed view (which points into `bytes`).
struct ModelBuffer {
  std::vector<uint8_t> bytes;
  std::unique_ptr<gguf::GgufFile> file;
};

inline SynthOptions TinyOptions(const std::string& arch, DType type, uint64_t seed = 0) {
  SynthOptions options;
  options.config = PresetConfig(*ParseSynthArch(arch), Preset::kTiny);
  options.type = type;
  options.seed = seed;
  options.preset = "tiny";
  return options;
}

inline StatusOr<ModelBuffer> Parse(std::vector<uint8_t> bytes) {
  ModelBuffer model;
  model.bytes = std::move(bytes);
  BF_ASSIGN_OR_RETURN(model.file, gguf::GgufFile::Parse(model.bytes));
  return model;
}

inline StatusOr<ModelBuffer> SynthToBuffer(const SynthOptions& options) {
  BF_ASSIGN_OR_RETURN(gguf::GgufWriter writer, BuildSynthWriter(options));
  BF_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, writer.WriteBuffer());
  return Parse(std::move(bytes));
}

inline std::vector<float> Decode(const gguf::GgufFile& file, const gguf::TensorInfo& tensor) {
  std::vector<float> out(tensor.elements());
  const Status status = kernels::ref::DequantizeTensor(tensor.type, file.TensorData(tensor), tensor.shape[0], out);
  EXPECT_TRUE(status.ok()) << tensor.name << ": " << status;
  return out;
}

inline std::vector<float> Decode(const gguf::GgufFile& file, const std::string& name) {
  const gguf::TensorInfo* tensor = file.FindTensor(name);
  EXPECT_NE(tensor, nullptr) << name;
  return tensor == nullptr ? std::vector<float>() : Decode(file, *tensor);
}

// Bitwise equality of float vectors (distinguishes -0 and +0, compares NaN payloads).
inline bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace bitfleet::synth::testing

// Writes a small seed corpus of valid GGUF files for gguf_fuzz: usage `gguf_fuzz_seed DIR`.
// The files cover every value type, nested and empty arrays, several tensor types and
// alignments, so the fuzzer starts from inputs that reach every part of the parser.
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "model/gguf/gguf.h"

namespace bitfleet::gguf {
namespace {

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(i * 37 + 11);
  return out;
}

Status AddTensors(GgufWriter& writer) {
  BF_RETURN_IF_ERROR(writer.AddTensor("token_embd.weight", DType::kF16, {8, 2}, Pattern(32)));
  BF_RETURN_IF_ERROR(writer.AddTensor("blk.0.attn_q.weight", DType::kQ8_0, {32, 2}, Pattern(68)));
  BF_RETURN_IF_ERROR(writer.AddTensor("blk.0.ffn_up.weight", DType::kI2_S, {128, 1}, Pattern(64)));
  BF_RETURN_IF_ERROR(writer.AddTensor("blk.0.ffn_down.weight", DType::kTQ2_0, {256}, Pattern(66)));
  return writer.AddTensor("output_norm.weight", DType::kF32, {3, 1, 1, 1}, Pattern(12));
}

void SetAllValueTypes(GgufWriter& writer) {
  writer.SetString("general.architecture", "bitnet");
  writer.SetString("general.name", "");
  writer.Set("v.u8", Value::U8(200));
  writer.Set("v.i8", Value::I8(-3));
  writer.Set("v.u16", Value::U16(60000));
  writer.Set("v.i16", Value::I16(-300));
  writer.SetU32("v.u32", 4000000000u);
  writer.Set("v.i32", Value::I32(-70000));
  writer.Set("v.u64", Value::U64(uint64_t{1} << 50));
  writer.Set("v.i64", Value::I64(-(int64_t{1} << 50)));
  writer.SetF32("v.f32", 1e-5f);
  writer.Set("v.f64", Value::F64(3.5));
  writer.SetBool("v.bool", true);
  writer.Set("tokenizer.ggml.tokens", Value::StringArray({"<unk>", "<s>", "</s>", "a", ""}));
  writer.Set("tokenizer.ggml.scores", Value::F32Array({0.0f, -1.0f, -2.0f, -3.5f, 0.25f}));
  writer.Set("tokenizer.ggml.token_type", Value::I32Array({2, 3, 3, 1, 1}));
  writer.Set("v.empty", Value::MakeArray(Array{ValueType::kUint64, {}}));
  writer.Set("v.nested", Value::MakeArray(Array{ValueType::kArray, {Value::I32Array({1, 2}), Value::I32Array({})}}));
  writer.Set("v.bools", Value::MakeArray(Array{ValueType::kBool, {Value::Bool(false), Value::Bool(true)}}));
}

Status WriteSeeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  {
    GgufWriter empty;
    BF_RETURN_IF_ERROR(empty.WriteFile((dir / "seed_empty.gguf").string()));
  }
  {
    GgufWriter values;
    SetAllValueTypes(values);
    BF_RETURN_IF_ERROR(values.WriteFile((dir / "seed_values.gguf").string()));
  }
  for (uint32_t alignment : {1u, 32u, 64u}) {
    GgufWriter model;
    SetAllValueTypes(model);
    model.Set(std::string(kAlignmentKey), Value::U32(alignment));
    BF_RETURN_IF_ERROR(AddTensors(model));
    BF_RETURN_IF_ERROR(model.WriteFile((dir / ("seed_model_align" + std::to_string(alignment) + ".gguf")).string()));
  }
  {
    GgufWriter tensors_only;
    BF_RETURN_IF_ERROR(AddTensors(tensors_only));
    BF_RETURN_IF_ERROR(tensors_only.WriteFile((dir / "seed_tensors.gguf").string()));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitfleet::gguf

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: gguf_fuzz_seed CORPUS_DIR\n";
    return 2;
  }
  const bitfleet::Status status = bitfleet::gguf::WriteSeeds(argv[1]);
  if (!status.ok()) {
    std::cerr << "gguf_fuzz_seed: " << status << "\n";
    return 1;
  }
  return 0;
}

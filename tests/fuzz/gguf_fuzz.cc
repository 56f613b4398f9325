// libFuzzer target for the GGUF reader (model files are hostile input, DESIGN.md §9).
// Parses the input; when it is accepted, reads every value and every tensor byte, then
// rewrites the file with GgufWriter and checks that writing is stable: parse(write(file))
// writes the same bytes again. Built only with BITFLEET_FUZZ=ON under clang, with ASan and
// UBSan on every library (see tests/fuzz/CMakeLists.txt).
#include <cstdint>
#include <cstdlib>
#include <span>

#include "model/gguf/gguf.h"

namespace bitfleet::gguf {
namespace {

uint64_t TouchValue(const Value& value) {
  uint64_t sum = static_cast<uint64_t>(value.type()) + value.is_integer() + value.is_float();
  if (auto u = value.AsU64(); u.ok()) sum += *u;
  if (auto i = value.AsI64(); i.ok()) sum += static_cast<uint64_t>(*i);
  if (auto u = value.AsU32(); u.ok()) sum += *u;
  if (auto f = value.AsF32(); f.ok()) sum += *f > 0.0f;
  if (auto d = value.AsF64(); d.ok()) sum += *d > 0.0;
  if (auto b = value.AsBool(); b.ok()) sum += *b;
  if (auto s = value.AsString(); s.ok()) {
    for (char c : *s) sum += static_cast<uint8_t>(c);
  }
  if (auto a = value.AsArray(); a.ok()) {
    for (const Value& item : (*a)->items) sum += TouchValue(item);
  }
  return sum;
}

uint64_t TouchFile(const GgufFile& file) {
  uint64_t sum = file.alignment() + file.data_offset() + file.version();
  for (const KeyValue& kv : file.metadata()) {
    sum += TouchValue(kv.value) + (file.Find(kv.key) == &kv.value);
    // The typed getters walk arrays element by element; their errors must be clean too.
    sum += file.GetString(kv.key).ok() + file.GetU32(kv.key).ok() + file.GetU64(kv.key).ok();
    sum += file.GetF32(kv.key).ok() + file.GetBool(kv.key).ok() + file.GetStringArray(kv.key).ok();
    sum += file.GetF32Array(kv.key).ok() + file.GetI32Array(kv.key).ok();
  }
  for (const TensorInfo& t : file.tensors()) {
    const std::span<const uint8_t> data = file.TensorData(t);
    if (data.size() != t.size_bytes || file.FindTensor(t.name) != &t) std::abort();
    for (uint8_t byte : data) sum += byte;
    sum += t.elements() + t.rows();
  }
  return sum;
}

// Re-serializes a parsed file; fails where the writer is stricter than the reader (tensor
// names over 63 bytes, empty keys).
StatusOr<std::vector<uint8_t>> Rewrite(const GgufFile& file) {
  GgufWriter writer;
  for (const KeyValue& kv : file.metadata()) writer.Set(kv.key, kv.value);
  for (const TensorInfo& t : file.tensors()) {
    const std::span<const uint8_t> data = file.TensorData(t);
    BF_RETURN_IF_ERROR(writer.AddTensor(t.name, t.type, t.shape, std::vector<uint8_t>(data.begin(), data.end())));
  }
  return writer.WriteBuffer();
}

void CheckRewriteIsStable(const GgufFile& file) {
  auto first = Rewrite(file);
  if (!first.ok()) return;
  auto reparsed = GgufFile::Parse(*first);
  if (!reparsed.ok()) std::abort();  // the writer produced a file its own reader rejects
  auto second = Rewrite(**reparsed);
  if (!second.ok() || *second != *first) std::abort();
}

}  // namespace
}  // namespace bitfleet::gguf

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitfleet::gguf;
  auto file = GgufFile::Parse(std::span<const uint8_t>(data, size));
  if (!file.ok()) {
    // Every rejection carries a message.
    if (file.status().message().empty()) std::abort();
    return 0;
  }
  volatile uint64_t sink = TouchFile(**file);
  (void)sink;
  CheckRewriteIsStable(**file);
  return 0;
}

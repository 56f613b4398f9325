// GGUF header, tensor directory and data layout (docs/gguf.md). The whole header is
// parsed and every tensor's byte range is checked against the file (and against every other
// tensor's range) before GgufFile is handed out, so later accessors never need to re-validate.
#include <algorithm>
#include <bit>
#include <cctype>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/checked_math.h"
#include "core/logging.h"
#include "model/gguf/gguf_parser.h"

namespace bitfleet::gguf {
namespace {

// The smallest possible directory entry: name length (8), n_dims (4), one dim (8), type (4),
// offset (8).
constexpr uint64_t kMinTensorInfoBytes = 32;

std::string Printable(uint32_t magic) {
  std::string out;
  for (int i = 0; i < 4; ++i) {
    const unsigned char c = static_cast<unsigned char>(magic >> (8 * i));
    out += std::isprint(c) ? static_cast<char>(c) : '.';
  }
  return out;
}

// Rejects two tensors whose byte ranges in the data section overlap. Aliased tensors would
// let a small file declare far more weights than it holds (the loader allocates and repacks
// each tensor), so together with the bounds check this caps the declared tensor bytes at the
// size of the data section. Gaps (alignment padding, unused bytes) are fine. Sorting by start
// makes it O(n log n): once sorted, ranges are disjoint iff each ends at or before the start
// of the next. Zero-byte tensors own no bytes and are skipped. Every offset + size was
// already checked not to overflow and to lie within the file.
Status CheckNoOverlap(const std::vector<TensorInfo>& tensors) {
  std::vector<size_t> order;
  order.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].size_bytes > 0) order.push_back(i);
  }
  // Ties broken by directory index so the error names the same pair on every run.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors[a].offset != tensors[b].offset ? tensors[a].offset < tensors[b].offset : a < b;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& prev = tensors[order[k - 1]];
    const TensorInfo& next = tensors[order[k]];
    if (next.offset < prev.offset + prev.size_bytes) {
      return FormatError(absl::StrCat("tensors '", prev.name, "' (", prev.size_bytes, " bytes at data offset ",
                                      prev.offset, ") and '", next.name, "' (", next.size_bytes,
                                      " bytes at data offset ", next.offset,
                                      ") overlap; tensors may not share data"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Status Parser::Run(GgufFile& file) {
  file.bytes_ = bytes_;
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
  BF_RETURN_IF_ERROR(ReadHeader(file, tensor_count, kv_count));
  BF_RETURN_IF_ERROR(ReadMetadata(file, kv_count));
  BF_RETURN_IF_ERROR(ReadAlignment(file));
  BF_RETURN_IF_ERROR(ReadTensorDirectory(file, tensor_count));
  return PlaceTensors(file);
}

Status Parser::ReadHeader(GgufFile& file, uint64_t& tensor_count, uint64_t& kv_count) {
  BF_ASSIGN_OR_RETURN(uint32_t magic, cursor_.Read<uint32_t>("magic"));
  if (magic != kMagic) {
    return FormatError(absl::StrFormat("bad magic 0x%08x (\"%s\"), expected \"GGUF\"", magic, Printable(magic)));
  }
  BF_ASSIGN_OR_RETURN(uint32_t version, cursor_.Read<uint32_t>("version"));
  if (version != 2 && version != 3) {
    const uint32_t swapped = __builtin_bswap32(version);
    if (swapped >= 1 && swapped <= 3) {
      return FormatError("big-endian GGUF files are not supported");
    }
    if (version == 1) {
      return FormatError("GGUF version 1 is not supported (its 32-bit counts predate v2); only versions 2 and 3 are");
    }
    return FormatError(absl::StrCat("unsupported GGUF version ", version, " (only versions 2 and 3)"));
  }
  file.version_ = version;
  BF_ASSIGN_OR_RETURN(tensor_count, cursor_.Read<uint64_t>("tensor count"));
  BF_ASSIGN_OR_RETURN(kv_count, cursor_.Read<uint64_t>("metadata entry count"));
  if (tensor_count > limits_.max_tensor_count) {
    return FormatError(absl::StrCat("tensor count ", tensor_count, " exceeds the limit of ", limits_.max_tensor_count,
                                    " (ReadLimits::max_tensor_count)"));
  }
  if (kv_count > limits_.max_kv_count) {
    return FormatError(absl::StrCat("metadata entry count ", kv_count, " exceeds the limit of ",
                                    limits_.max_kv_count, " (ReadLimits::max_kv_count)"));
  }
  return absl::OkStatus();
}

Status Parser::ReadAlignment(GgufFile& file) {
  file.alignment_ = kDefaultAlignment;
  const Value* value = file.Find(kAlignmentKey);
  if (value == nullptr) return absl::OkStatus();
  // llama.cpp reads this key with gguf_get_val_u32, which only accepts uint32.
  if (value->type() != ValueType::kUint32) {
    const std::string_view type = ValueTypeName(value->type());
    return FormatError(absl::StrCat("general.alignment must be uint32, got ", std::string(type.data(), type.size())));
  }
  const uint64_t alignment = *value->AsU64();
  if (!std::has_single_bit(alignment)) {
    return FormatError(absl::StrCat("general.alignment ", alignment, " is not a nonzero power of two"));
  }
  file.alignment_ = alignment;
  return absl::OkStatus();
}

Status Parser::ReadTensorDirectory(GgufFile& file, uint64_t tensor_count) {
  if (tensor_count > cursor_.remaining() / kMinTensorInfoBytes) {
    return FormatError(absl::StrCat("truncated: header declares ", tensor_count, " tensors but only ",
                                    cursor_.remaining(), " bytes follow the metadata"));
  }
  file.tensors_.reserve(tensor_count);
  file.tensor_index_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    BF_ASSIGN_OR_RETURN(TensorInfo info, ReadTensorInfo(i));
    if (auto it = file.tensor_index_.find(info.name); it != file.tensor_index_.end()) {
      return FormatError(
          absl::StrCat("duplicate tensor name '", info.name, "' (tensors #", it->second, " and #", i, ")"));
    }
    file.tensor_index_.emplace(info.name, file.tensors_.size());
    file.tensors_.push_back(std::move(info));
  }
  return absl::OkStatus();
}

StatusOr<TensorInfo> Parser::ReadTensorInfo(uint64_t index) {
  TensorInfo info;
  {
    const std::string what = absl::StrCat("name of tensor #", index);
    BF_ASSIGN_OR_RETURN(std::string_view name, cursor_.ReadString(what, limits_.max_string_bytes));
    BF_RETURN_IF_ERROR(Charge(sizeof(TensorInfo) + name.size() + kMaxDims * sizeof(uint64_t), what));
    info.name = std::string(name);
  }
  const std::string context = absl::StrCat("tensor '", info.name, "': ");
  auto n_dims = cursor_.Read<uint32_t>("dimension count");
  if (!n_dims.ok()) return Annotate(n_dims.status(), context);
  if (*n_dims == 0 || *n_dims > static_cast<uint32_t>(kMaxDims)) {
    return FormatError(absl::StrCat(context, "has ", *n_dims, " dimensions (must be 1 to ", kMaxDims, ")"));
  }
  uint64_t elements = 1;
  for (uint32_t d = 0; d < *n_dims; ++d) {
    auto dim = cursor_.Read<uint64_t>("dimension");
    if (!dim.ok()) return Annotate(dim.status(), context);
    if (*dim == 0) return FormatError(absl::StrCat(context, "dimension ", d, " is zero"));
    const auto product = CheckedMul(elements, *dim);
    // ggml counts elements in int64_t, so the count must stay below INT64_MAX.
    if (!product || *product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FormatError(absl::StrCat(context, "element count overflows (dimension ", d, " is ", *dim, ")"));
    }
    elements = *product;
    info.shape.push_back(*dim);
  }
  auto type_id = cursor_.Read<uint32_t>("tensor type");
  if (!type_id.ok()) return Annotate(type_id.status(), context);
  const DTypeInfo* dtype = FindDType(*type_id);
  if (dtype == nullptr) {
    if (const char* name = UnsupportedGgmlTypeName(*type_id)) {
      // A real file of a type bitfleet has no kernels for (most int4 GGUFs are k-quants):
      // say which, and what to do about it.
      return FormatError(absl::StrCat(
          context, "type ", name, " (ggml type id ", *type_id,
          ") is not supported: bitfleet reads f32, f16, bf16, q8_0, q4_0, q4_1, tq1_0, tq2_0 and i2_s; "
          "requantize the original model to one of those (llama.cpp's llama-quantize --allow-requantize "
          "... Q8_0 or Q4_0, or from the f16/bf16 GGUF)"));
    }
    return FormatError(absl::StrCat(context, "unknown tensor type id ", *type_id));
  }
  info.type = dtype->type;
  auto size = TensorBytes(info.type, info.shape[0], elements);
  if (!size.ok()) return Annotate(size.status(), context);
  info.size_bytes = *size;
  auto offset = cursor_.Read<uint64_t>("data offset");
  if (!offset.ok()) return Annotate(offset.status(), context);
  info.offset = *offset;
  return info;
}

Status Parser::PlaceTensors(GgufFile& file) {
  // The data section starts at the first aligned offset after the directory, even when the
  // padding is missing from a file with no tensors (llama.cpp accepts that too).
  const auto data_offset = CheckedAlignUp(cursor_.pos(), file.alignment_);
  if (!data_offset) return FormatError("data section offset overflows");
  file.data_offset_ = *data_offset;
  for (const TensorInfo& t : file.tensors_) {
    const std::string context = absl::StrCat("tensor '", t.name, "': ");
    if (t.offset % file.alignment_ != 0) {
      return FormatError(absl::StrCat(context, "data offset ", t.offset, " is not a multiple of the alignment ",
                                      file.alignment_));
    }
    const auto start = CheckedAdd(file.data_offset_, t.offset);
    const auto end = start ? CheckedAdd(*start, t.size_bytes) : std::nullopt;
    if (!end || *end > bytes_.size()) {
      return FormatError(absl::StrCat(context, "data (", t.size_bytes, " bytes at data offset ", t.offset,
                                      ") lies outside the file of ", bytes_.size(),
                                      " bytes (truncated file or bad offset)"));
    }
  }
  return CheckNoOverlap(file.tensors_);
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(std::span<const uint8_t> bytes, const ReadLimits& limits) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  Parser parser(bytes, limits);
  if (Status status = parser.Run(*file); !status.ok()) return Annotate(status, "GGUF: ");
  return file;
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path, const ReadLimits& limits) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::Open(path));
  auto file = Parse(mapping->bytes(), limits);
  if (!file.ok()) return Annotate(file.status(), absl::StrCat(path, ": "));
  (*file)->mapping_ = std::move(mapping);
  Logger("gguf")->debug("{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}", path, (*file)->version_,
                        (*file)->metadata_.size(), (*file)->tensors_.size(), (*file)->alignment_);
  return file;
}

}  // namespace bitfleet::gguf

// Public entry points of the reference codecs: size and input validation, dispatch by type over
// whole blocks, the float formats, I2_S's per-tensor scale, and absmean ternarization.
#include "kernels/ref/quant.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/fp16.h"
#include "kernels/ref/quant_blocks.h"
#include "kernels/ref/quant_util.h"

namespace bitfleet::kernels::ref {
namespace {

using internal::LoadF32;
using internal::LoadU16;
using internal::StoreF32;
using internal::StoreU16;


Status CheckHasCodec(const char* what, DType type) {
  if (HasReferenceCodec(type)) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat(what, ": no reference codec for type ", DTypeName(type), " (not a weight format)"));
}

// ggml's quantizers do undefined float->int conversions on NaN/Inf; reject them up front.
Status CheckFinite(const char* what, DType type, std::span<const float> src) {
  if (!IsQuantized(type)) return absl::OkStatus();
  for (size_t i = 0; i < src.size(); ++i) {
    if (!std::isfinite(src[i])) {
      return absl::InvalidArgumentError(absl::StrCat(what, "(", DTypeName(type), "): element ", i, " is ",
                                                     std::isnan(src[i]) ? "NaN" : "infinite",
                                                     "; block-quantized types need finite values"));
    }
  }
  return absl::OkStatus();
}

Status SizeMismatch(const char* what, DType type, const char* buffer, uint64_t have, uint64_t want,
                    const std::string& detail) {
  return absl::InvalidArgumentError(absl::StrCat(what, "(", DTypeName(type), "): ", buffer, " holds ", have,
                                                 " bytes but ", detail, " needs ", want, " bytes"));
}

// Applies a fixed-size block codec to consecutive blocks. The caller has checked that
// `in` and `out` hold the same whole number of blocks.
template <size_t kInPerBlock, size_t kOutPerBlock, typename In, typename Out, typename Fn>
void ForEachBlock(std::span<In> in, std::span<Out> out, Fn fn) {
  const size_t blocks = in.size() / kInPerBlock;
  for (size_t b = 0; b < blocks; ++b) {
    fn(std::span<In, kInPerBlock>(in.data() + b * kInPerBlock, kInPerBlock),
       std::span<Out, kOutPerBlock>(out.data() + b * kOutPerBlock, kOutPerBlock));
  }
}

// Encodes whole blocks of a type without a tensor tail. Sizes are already validated.
void EncodeBlocks(DType type, std::span<const float> src, std::span<uint8_t> dst) {
  switch (type) {
    case DType::kF32:
      for (size_t i = 0; i < src.size(); ++i) StoreF32(&dst[4 * i], src[i]);
      return;
    case DType::kF16:
      for (size_t i = 0; i < src.size(); ++i) StoreU16(&dst[2 * i], FloatToHalf(src[i]));
      return;
    case DType::kBF16:
      for (size_t i = 0; i < src.size(); ++i) StoreU16(&dst[2 * i], FloatToBf16(src[i]));
      return;
    case DType::kQ8_0:
      return ForEachBlock<kQ8_0BlockElems, kQ8_0BlockBytes>(src, dst, QuantizeBlockQ8_0);
    case DType::kQ4_0:
      return ForEachBlock<kQ4_0BlockElems, kQ4_0BlockBytes>(src, dst, QuantizeBlockQ4_0);
    case DType::kQ4_1:
      return ForEachBlock<kQ4_1BlockElems, kQ4_1BlockBytes>(src, dst, QuantizeBlockQ4_1);
    case DType::kTQ1_0:
      return ForEachBlock<kTq1_0BlockElems, kTq1_0BlockBytes>(src, dst, QuantizeBlockTq1_0);
    case DType::kTQ2_0:
      return ForEachBlock<kTq2_0BlockElems, kTq2_0BlockBytes>(src, dst, QuantizeBlockTq2_0);
    case DType::kI2_S:
      return ForEachBlock<kI2sBlockElems, kI2sBlockBytes>(src, dst, QuantizeBlockI2s);
    default:
      return;  // unreachable: callers check HasReferenceCodec
  }
}

// Decodes whole blocks of a type without a tensor tail. Sizes are already validated.
void DecodeBlocks(DType type, std::span<const uint8_t> src, std::span<float> dst) {
  switch (type) {
    case DType::kF32:
      for (size_t i = 0; i < dst.size(); ++i) dst[i] = LoadF32(&src[4 * i]);
      return;
    case DType::kF16:
      for (size_t i = 0; i < dst.size(); ++i) dst[i] = HalfToFloat(LoadU16(&src[2 * i]));
      return;
    case DType::kBF16:
      for (size_t i = 0; i < dst.size(); ++i) dst[i] = Bf16ToFloat(LoadU16(&src[2 * i]));
      return;
    case DType::kQ8_0:
      return ForEachBlock<kQ8_0BlockBytes, kQ8_0BlockElems>(src, dst, DequantizeBlockQ8_0);
    case DType::kQ4_0:
      return ForEachBlock<kQ4_0BlockBytes, kQ4_0BlockElems>(src, dst, DequantizeBlockQ4_0);
    case DType::kQ4_1:
      return ForEachBlock<kQ4_1BlockBytes, kQ4_1BlockElems>(src, dst, DequantizeBlockQ4_1);
    case DType::kTQ1_0:
      return ForEachBlock<kTq1_0BlockBytes, kTq1_0BlockElems>(src, dst, DequantizeBlockTq1_0);
    case DType::kTQ2_0:
      return ForEachBlock<kTq2_0BlockBytes, kTq2_0BlockElems>(src, dst, DequantizeBlockTq2_0);
    default:
      return;  // unreachable: callers check HasReferenceCodec and handle I2_S separately
  }
}

void DecodeI2sBlocks(std::span<const uint8_t> codes, float scale, std::span<float> dst) {
  ForEachBlock<kI2sBlockBytes, kI2sBlockElems>(
      codes, dst, [scale](std::span<const uint8_t, kI2sBlockBytes> block, std::span<float, kI2sBlockElems> y) {
        DequantizeBlockI2s(block, scale, y);
      });
}

// Expected encoded size of a tensor of `elems` elements, with the reason in the error.
StatusOr<uint64_t> ExpectedTensorBytes(const char* what, DType type, uint64_t row_elems, uint64_t elems) {
  StatusOr<uint64_t> bytes = TensorBytes(type, row_elems, elems);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, "(", DTypeName(type), "): ", elems,
                                                   " elements in rows of ", row_elems, ": ",
                                                   std::string(bytes.status().message())));
  }
  return *bytes;
}

}  // namespace

bool HasReferenceCodec(DType type) {
  switch (type) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kTQ1_0:
    case DType::kTQ2_0:
    case DType::kI2_S:
      return true;
    default:
      return false;
  }
}

Status QuantizeTensor(DType type, std::span<const float> src, uint64_t row_elems, std::span<uint8_t> dst) {
  constexpr const char* kWhat = "QuantizeTensor";
  BF_RETURN_IF_ERROR(CheckHasCodec(kWhat, type));
  BF_ASSIGN_OR_RETURN(const uint64_t want, ExpectedTensorBytes(kWhat, type, row_elems, src.size()));
  if (dst.size() != want) {
    return SizeMismatch(kWhat, type, "destination", dst.size(), want,
                        absl::StrCat("a tensor of ", src.size(), " elements in rows of ", row_elems));
  }
  BF_RETURN_IF_ERROR(CheckFinite(kWhat, type, src));
  if (type != DType::kI2_S) {
    EncodeBlocks(type, src, dst);
    return absl::OkStatus();
  }
  // I2_S: codes for the whole tensor, then the 32-byte tail with scale = max|w| (what
  // bitnet.cpp stores; 0 for an all-zero tensor) and zero padding.
  const size_t code_bytes = dst.size() - kI2sTailBytes;
  EncodeBlocks(type, src, dst.first(code_bytes));
  float scale = 0.0f;
  for (float v : src) scale = std::max(scale, std::fabs(v));
  std::span<uint8_t> tail = dst.subspan(code_bytes);
  std::fill(tail.begin(), tail.end(), uint8_t{0});
  StoreF32(tail.data(), scale);
  return absl::OkStatus();
}

Status DequantizeTensor(DType type, std::span<const uint8_t> src, uint64_t row_elems, std::span<float> dst) {
  constexpr const char* kWhat = "DequantizeTensor";
  BF_RETURN_IF_ERROR(CheckHasCodec(kWhat, type));
  BF_ASSIGN_OR_RETURN(const uint64_t want, ExpectedTensorBytes(kWhat, type, row_elems, dst.size()));
  if (src.size() != want) {
    return SizeMismatch(kWhat, type, "source", src.size(), want,
                        absl::StrCat("a tensor of ", dst.size(), " elements in rows of ", row_elems));
  }
  if (type != DType::kI2_S) {
    DecodeBlocks(type, src, dst);
    return absl::OkStatus();
  }
  BF_ASSIGN_OR_RETURN(const float scale, ReadI2sScale(src));
  DecodeI2sBlocks(src.first(src.size() - kI2sTailBytes), scale, dst);
  return absl::OkStatus();
}

Status QuantizeRow(DType type, std::span<const float> src, std::span<uint8_t> dst) {
  constexpr const char* kWhat = "QuantizeRow";
  BF_RETURN_IF_ERROR(CheckHasCodec(kWhat, type));
  if (type == DType::kI2_S) {
    return absl::InvalidArgumentError(
        "QuantizeRow(i2_s): I2_S has one scale per tensor; use QuantizeTensor");
  }
  StatusOr<uint64_t> want = RowBytes(type, src.size());
  if (!want.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWhat, "(", DTypeName(type), "): ", std::string(want.status().message())));
  }
  if (dst.size() != *want) {
    return SizeMismatch(kWhat, type, "destination", dst.size(), *want, absl::StrCat("a row of ", src.size(), " elements"));
  }
  BF_RETURN_IF_ERROR(CheckFinite(kWhat, type, src));
  EncodeBlocks(type, src, dst);
  return absl::OkStatus();
}

Status DequantizeRow(DType type, std::span<const uint8_t> src, std::span<float> dst) {
  constexpr const char* kWhat = "DequantizeRow";
  BF_RETURN_IF_ERROR(CheckHasCodec(kWhat, type));
  if (type == DType::kI2_S) {
    return absl::InvalidArgumentError(
        "DequantizeRow(i2_s): I2_S has one scale per tensor; use DequantizeTensor, or "
        "DequantizeI2sCodes with ReadI2sScale");
  }
  StatusOr<uint64_t> want = RowBytes(type, dst.size());
  if (!want.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWhat, "(", DTypeName(type), "): ", std::string(want.status().message())));
  }
  if (src.size() != *want) {
    return SizeMismatch(kWhat, type, "source", src.size(), *want, absl::StrCat("a row of ", dst.size(), " elements"));
  }
  DecodeBlocks(type, src, dst);
  return absl::OkStatus();
}

StatusOr<float> ReadI2sScale(std::span<const uint8_t> tensor) {
  if (tensor.size() < kI2sTailBytes || tensor.size() % kI2sBlockBytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ReadI2sScale: an I2_S tensor is 32-byte code blocks plus a ",
                                                   "32-byte tail, but ", tensor.size(), " bytes were given"));
  }
  const float scale = LoadF32(&tensor[tensor.size() - kI2sTailBytes]);
  // Every weight of the tensor is ±scale or 0: a NaN or infinite scale makes the model's output
  // garbage without any error downstream.
  if (!std::isfinite(scale)) return absl::InvalidArgumentError(absl::StrCat("I2_S tensor scale is ", scale));
  return scale;
}

Status DequantizeI2sCodes(std::span<const uint8_t> codes, float scale, std::span<float> dst) {
  if (dst.size() % kI2sBlockElems != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DequantizeI2sCodes: ", dst.size(), " elements is not a multiple of the i2_s block (128)"));
  }
  if (codes.size() != dst.size() / 4) {
    return absl::InvalidArgumentError(absl::StrCat("DequantizeI2sCodes: codes hold ", codes.size(),
                                                   " bytes but ", dst.size(), " elements need ", dst.size() / 4));
  }
  DecodeI2sBlocks(codes, scale, dst);
  return absl::OkStatus();
}

StatusOr<float> QuantizeTernaryAbsmean(std::span<const float> src, std::span<float> dst,
                                       const TernaryAbsmeanOptions& options) {
  if (dst.size() != src.size()) {
    return absl::InvalidArgumentError(absl::StrCat("QuantizeTernaryAbsmean: destination holds ", dst.size(),
                                                   " floats but the source has ", src.size()));
  }
  if (!(options.min_scale > 0.0f) || !std::isfinite(options.min_scale)) {
    return absl::InvalidArgumentError("QuantizeTernaryAbsmean: min_scale must be finite and > 0");
  }
  double sum = 0.0;
  for (size_t i = 0; i < src.size(); ++i) {
    if (!std::isfinite(src[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("QuantizeTernaryAbsmean: element ", i, " is ", std::isnan(src[i]) ? "NaN" : "infinite"));
    }
    sum += std::fabs(static_cast<double>(src[i]));
  }
  const double mean = src.empty() ? 0.0 : sum / static_cast<double>(src.size());
  float scale = std::max(static_cast<float>(mean), options.min_scale);
  if (options.fp16_scale) {
    scale = HalfToFloat(FloatToHalf(scale));
    if (std::isinf(scale)) {
      return absl::InvalidArgumentError(absl::StrCat("QuantizeTernaryAbsmean: mean |w| = ", mean,
                                                     " does not fit an fp16 scale (max 65504)"));
    }
  }
  // nearbyint rounds halves to even, like torch.round / numpy.round in BitNet's recipe. Going
  // through an int turns -0 into +0, which is what every ternary dequantizer produces for 0.
  for (size_t i = 0; i < src.size(); ++i) {
    const int t = static_cast<int>(std::clamp(std::nearbyint(src[i] / scale), -1.0f, 1.0f));
    dst[i] = static_cast<float>(t) * scale;
  }
  return scale;
}

}  // namespace bitfleet::kernels::ref

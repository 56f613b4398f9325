#include "kernels/cuda/cuda_weight.h"

#include <cstring>

#include "core/fp16.h"
#include "kernels/ref/matmul_ref.h"
#include "kernels/ref/quant.h"

namespace bitfleet::kernels::cuda {
namespace {

// Dims beyond this are rejected before any size arithmetic (2^31 rows or columns is far past
// any model; it also keeps every index below in int64 range).
constexpr uint64_t kMaxDim = uint64_t{1} << 31;

bool FormatOf(DType type, QuantFormat* format) {
  switch (type) {
    case DType::kTQ1_0:
    case DType::kTQ2_0:
    case DType::kI2_S:
      *format = QuantFormat::kTernary;
      return true;
    case DType::kQ4_0:
      *format = QuantFormat::kQ4_0;
      return true;
    case DType::kQ4_1:
      *format = QuantFormat::kQ4_1;
      return true;
    case DType::kQ8_0:
      *format = QuantFormat::kQ8_0;
      return true;
    default:
      return false;
  }
}

// TQ2_0, Q4_0, Q4_1 and Q8_0 straight into the image: their stored blocks are already in the
// GPU step's byte order, BlocksPerStep(f) blocks side by side in a row's step.
// - TQ2_0: 64 code bytes, then fp16 d; one block is one step (byte 32h + m, bits 2k: element
//   128h + 32k + m; code = w + 1, its code 3 kept as 3, as EncodeCode writes the +2 it decodes
//   to), and d becomes the step's float scale.
// - Q4_0 / Q4_1 / Q8_0: fp16 d (and m), then 16 nibble bytes or 32 int8 in GGUF order; d and m
//   are kept as their fp16 bits.
// cuda_host_test reads the image back the way the kernels do, against the integer reference.
void CopyStoredBlocks(QuantFormat f, std::span<const uint8_t> bytes, CudaWeightImage* image) {
  const bool ternary = f == QuantFormat::kTernary;
  const bool q4_1 = f == QuantFormat::kQ4_1;
  const uint64_t code_bytes = kStepBytes / BlocksPerStep(f);  // per stored block
  const uint64_t scale_bytes = q4_1 ? 4 : 2;
  const uint64_t block_bytes = code_bytes + scale_bytes;
  const uint64_t codes_at = ternary ? 0 : scale_bytes;
  const uint64_t blocks_per_row = static_cast<uint64_t>(image->cols) / BlockElems(f);
  for (int64_t r = 0; r < image->rows; ++r) {
    const int64_t g = r / kRowGroup;
    const int rg = static_cast<int>(r % kRowGroup);
    for (uint64_t b = 0; b < blocks_per_row; ++b) {
      const uint8_t* src = bytes.data() + (static_cast<uint64_t>(r) * blocks_per_row + b) * block_bytes;
      const uint64_t step = b / BlocksPerStep(f);
      const uint64_t within = b % BlocksPerStep(f);
      std::memcpy(&image->data[CodeOffset(g, step, rg, image->n_steps) + within * code_bytes], src + codes_at,
                  code_bytes);
      const uint64_t si = ScaleIndex(g, b, rg, image->n_blocks);
      if (ternary) {
        uint16_t d = 0;
        std::memcpy(&d, src + code_bytes, sizeof(d));
        image->scales[si] = HalfToFloat(d);
      } else {
        std::memcpy(&image->half_d[si], src, 2);
        if (q4_1) std::memcpy(&image->half_m[si], src + 2, 2);
      }
    }
  }
}

// Every other type's (TQ1_0, I2_S) integer values and scales go through ref::DecodeIntBlock, the
// integer view the CPU kernels are tested against, so the GPU layout cannot disagree with it.
Status PackQuantized(DType type, std::span<const uint8_t> bytes, CudaWeightImage* image) {
  const QuantFormat f = image->format;
  const int64_t step_elems = StepElems(f);
  image->n_groups = (image->rows + kRowGroup - 1) / kRowGroup;
  image->n_steps = (image->cols + step_elems - 1) / step_elems;
  image->n_blocks = image->n_steps * BlocksPerStep(f);
  const uint64_t n_code_bytes = static_cast<uint64_t>(image->n_groups) * image->n_steps * kGroupStepBytes;
  const uint64_t n_scales = static_cast<uint64_t>(image->n_groups) * image->n_blocks * kRowGroup;

  // Padding decodes to 0 with scale 0.
  const uint32_t zero_code = EncodeCode(f, 0);
  uint8_t zero_byte = 0;
  for (int e = 0; e < StepElems(f); ++e) {
    const CodePlace p = PlaceInStep(f, e);
    if (p.byte == 0) zero_byte |= static_cast<uint8_t>(zero_code << p.shift);
  }
  image->data.assign(n_code_bytes, zero_byte);
  if (f == QuantFormat::kTernary) {
    image->scales.assign(n_scales, 0.0f);
  } else {
    image->half_d.assign(n_scales, 0);
    if (f == QuantFormat::kQ4_1) image->half_m.assign(n_scales, 0);
  }

  if (type == DType::kTQ2_0 || f != QuantFormat::kTernary) {
    CopyStoredBlocks(f, bytes, image);
    return absl::OkStatus();
  }
  float i2s_scale = 0.0f;
  if (type == DType::kI2_S) {
    BF_ASSIGN_OR_RETURN(i2s_scale, ref::ReadI2sScale(bytes));
  }
  const uint32_t int_block = ref::IntBlockElems(type);
  const uint64_t blocks_per_row = static_cast<uint64_t>(image->cols) / int_block;
  const int block_elems = BlockElems(f);
  ref::IntBlock blk;
  for (int64_t r = 0; r < image->rows; ++r) {
    const int64_t g = r / kRowGroup;
    const int rg = static_cast<int>(r % kRowGroup);
    for (uint64_t b = 0; b < blocks_per_row; ++b) {
      ref::DecodeIntBlock(type, bytes.data(), static_cast<uint64_t>(r) * blocks_per_row + b, i2s_scale, &blk);
      const int64_t e_first = static_cast<int64_t>(b * int_block);
      for (uint32_t i = 0; i < int_block; ++i) {
        const int64_t e = e_first + i;
        const CodePlace p = PlaceInStep(f, static_cast<int>(e % step_elems));
        uint8_t& byte = image->data[CodeOffset(g, e / step_elems, rg, image->n_steps) + p.byte];
        const uint32_t mask = f == QuantFormat::kQ8_0 ? 0xffu : (f == QuantFormat::kTernary ? 3u : 15u);
        byte = static_cast<uint8_t>((byte & ~(mask << p.shift)) | (EncodeCode(f, blk.w[i]) << p.shift));
      }
      // One scale per scale block touched by this integer block (I2_S: 128-element integer
      // blocks share their 256-element scale block; the scale is the tensor's anyway).
      for (int64_t e = e_first; e < e_first + int_block; e += block_elems) {
        const uint64_t si = ScaleIndex(g, e / block_elems, rg, image->n_blocks);
        if (f == QuantFormat::kTernary) {
          image->scales[si] = blk.d;
        } else {
          image->half_d[si] = FloatToHalf(blk.d);  // exact: d came from an fp16 field
          if (f == QuantFormat::kQ4_1) image->half_m[si] = FloatToHalf(blk.m);
        }
      }
    }
  }
  return absl::OkStatus();
}

Status PackFloat(DType type, std::span<const uint8_t> bytes, CudaWeightImage* image) {
  const uint64_t elem = type == DType::kF32 ? 4 : 2;
  image->float_format = type == DType::kF32 ? FloatFormat::kF32 : (type == DType::kF16 ? FloatFormat::kF16 : FloatFormat::kBF16);
  image->row_stride = (image->cols + 7) / 8 * 8;
  image->data.assign(static_cast<uint64_t>(image->rows) * image->row_stride * elem, 0);
  for (int64_t r = 0; r < image->rows; ++r) {
    std::memcpy(image->data.data() + r * image->row_stride * elem, bytes.data() + r * image->cols * elem,
                image->cols * elem);
  }
  return absl::OkStatus();
}

}  // namespace

StatusOr<CudaWeightImage> PackWeightForCuda(DType type, uint64_t cols, uint64_t rows, std::span<const uint8_t> bytes) {
  if (cols == 0 || rows == 0 || cols >= kMaxDim || rows >= kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat("weight dims out of range: ", rows, " x ", cols));
  }
  CudaWeightImage image;
  image.type = type;
  image.rows = static_cast<int64_t>(rows);
  image.cols = static_cast<int64_t>(cols);
  image.quantized = FormatOf(type, &image.format);
  if (!image.quantized && type != DType::kF32 && type != DType::kF16 && type != DType::kBF16) {
    return absl::UnimplementedError(absl::StrCat("no CUDA matmul for weight type ", DTypeName(type)));
  }
  BF_ASSIGN_OR_RETURN(const uint64_t expected, TensorBytes(type, cols, rows * cols));
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(DTypeName(type), " weight of ", rows, " x ", cols, " needs ",
                                                   expected, " bytes, got ", bytes.size()));
  }
  image.stream_bytes = expected;
  BF_RETURN_IF_ERROR(image.quantized ? PackQuantized(type, bytes, &image) : PackFloat(type, bytes, &image));
  return image;
}

StatusOr<std::unique_ptr<CudaWeight>> CudaWeight::Create(DType type, uint64_t cols, uint64_t rows,
                                                         std::span<const uint8_t> bytes) {
  BF_ASSIGN_OR_RETURN(const CudaWeightImage image, PackWeightForCuda(type, cols, rows, bytes));
  return Upload(image);
}

StatusOr<std::unique_ptr<CudaWeight>> CudaWeight::Upload(const CudaWeightImage& image) {
  auto w = std::unique_ptr<CudaWeight>(new CudaWeight());
  w->type_ = image.type;
  w->quantized_ = image.quantized;
  w->stream_bytes_ = image.stream_bytes;
  w->bytes_ = image.packed_bytes();
  BF_ASSIGN_OR_RETURN(w->data_, DeviceBuffer::Allocate(image.data.size()));
  BF_RETURN_IF_ERROR(w->data_.Upload(image.data.data(), image.data.size()));
  if (!image.quantized) {
    w->float_.format = image.float_format;
    w->float_.data = w->data_.get();
    w->float_.rows = image.rows;
    w->float_.cols = image.cols;
    w->float_.row_stride = image.row_stride;
    return w;
  }
  BF_ASSIGN_OR_RETURN(w->scales_, DeviceBuffer::Allocate(image.scales.size() * sizeof(float)));
  BF_RETURN_IF_ERROR(w->scales_.Upload(image.scales.data(), image.scales.size() * sizeof(float)));
  BF_ASSIGN_OR_RETURN(w->half_d_, DeviceBuffer::Allocate(image.half_d.size() * sizeof(uint16_t)));
  BF_RETURN_IF_ERROR(w->half_d_.Upload(image.half_d.data(), image.half_d.size() * sizeof(uint16_t)));
  BF_ASSIGN_OR_RETURN(w->half_m_, DeviceBuffer::Allocate(image.half_m.size() * sizeof(uint16_t)));
  BF_RETURN_IF_ERROR(w->half_m_.Upload(image.half_m.data(), image.half_m.size() * sizeof(uint16_t)));
  QuantWeightView& v = w->quant_;
  v.format = image.format;
  v.codes = w->data_.as<uint8_t>();
  v.scales = w->scales_.as<float>();
  v.half_d = w->half_d_.as<uint16_t>();
  v.half_m = w->half_m_.as<uint16_t>();
  v.rows = image.rows;
  v.cols = image.cols;
  v.n_groups = image.n_groups;
  v.n_steps = image.n_steps;
  v.n_blocks = image.n_blocks;
  return w;
}

}  // namespace bitfleet::kernels::cuda

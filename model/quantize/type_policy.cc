#include "model/quantize/type_policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bitfleet::quantize {
namespace {

constexpr DType kWeightTypes[] = {DType::kF32,  DType::kF16,   DType::kBF16,  DType::kQ8_0, DType::kQ4_0,
                                  DType::kQ4_1, DType::kTQ1_0, DType::kTQ2_0, DType::kI2_S};

}  // namespace

TensorRole ClassifyTensor(std::string_view name, size_t n_dims) {
  if (n_dims <= 1) return TensorRole::kVector;
  if (n_dims > 2) return TensorRole::kOther;
  if (name == "token_embd.weight") return TensorRole::kEmbedding;
  if (name == "output.weight") return TensorRole::kOutput;
  return TensorRole::kMatrix;
}

StatusOr<DType> ParseWeightType(std::string_view name) {
  const DTypeInfo* info = FindDTypeByName(name);
  if (info != nullptr) {
    for (DType t : kWeightTypes) {
      if (t == info->type) return t;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown weight type '", std::string(name), "' (expected one of ", WeightTypeList(), ")"));
}

std::string WeightTypeList() {
  std::vector<std::string> names;
  for (DType t : kWeightTypes) names.emplace_back(DTypeName(t));
  return absl::StrJoin(names, ", ");
}

DType DefaultEmbeddingType(DType type) { return IsTernary(type) ? DType::kQ8_0 : type; }

TypeChoice ChooseType(const TypePolicy& policy, TensorRole role, uint64_t row_elems) {
  DType wanted = policy.type;
  switch (role) {
    case TensorRole::kVector:
    case TensorRole::kOther:
      return {DType::kF32, ""};
    case TensorRole::kEmbedding:
    case TensorRole::kOutput:
      wanted = policy.embedding_type.value_or(DefaultEmbeddingType(policy.type));
      break;
    case TensorRole::kMatrix:
      break;
  }
  const uint32_t block = Info(wanted).block_elems;
  if (row_elems % block == 0) return {wanted, ""};
  return {kFallbackType, absl::StrCat("row of ", row_elems, " elements is not a multiple of the ", DTypeName(wanted),
                                      " block (", block, ")")};
}

uint32_t FileTypeFor(DType type) {
  switch (type) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kQ4_0:
      return 2;
    case DType::kQ4_1:
      return 3;
    case DType::kQ8_0:
      return 7;
    case DType::kBF16:
      return 32;
    case DType::kTQ1_0:
      return 36;
    case DType::kTQ2_0:
      return 37;
    case DType::kI2_S:
      return 40;
    default:
      return 0;
  }
}

}  // namespace bitfleet::quantize

// Variant tables and the one-time choice among them (compiled without ISA flags).
#include "kernels/cpu/dispatch.h"

#include <cstdlib>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "kernels/cpu/variant_fns.h"
#include "kernels/matmul.h"

namespace bitfleet::kernels::cpu {
namespace {

// `ns` supplies every function, except the quantized matmuls, which come from `qns`, and those
// a variant may lack (null): the prefill attention run `run` (`run8` on an int8 cache; AVX-512),
// the int8 cache's in-place attention `qk8` / `pv8` (AVX2 and up), and the AMX tile copy `tile`. Aggregate
// initialization keeps the tables constant-initialized (usable from any static initializer).
#define BITFLEET_CPU_TABLE_FROM(ns, qns, run, run8, qk8, pv8, tile, variant, name)                              \
  CpuKernels {                                                                                                 \
    variant, name, ns::AbsMax, ns::QuantizeRow, qns::MatMulTernary, qns::MatMulQ4_0, qns::MatMulQ4_1,          \
        qns::MatMulQ8_0, ns::MatMulF32, ns::MatMulF16, ns::MatMulBf16, ns::SumSquares, ns::ScaleMul, ns::QkF16, \
        ns::PvF16, ns::F32ToF16, ns::DequantI8F16, ns::ExpShiftSum, ns::SiluMul, ns::Relu2Mul, ns::ArgMax,     \
        run, run8, qk8, pv8, tile                                                                              \
  }
#define BITFLEET_CPU_TABLE(ns, variant, name) \
  BITFLEET_CPU_TABLE_FROM(ns, ns, nullptr, nullptr, nullptr, nullptr, nullptr, variant, name)

const CpuKernels kScalarTable = BITFLEET_CPU_TABLE(scalar, CpuVariant::kScalar, "scalar");
#if defined(BITFLEET_KERNELS_X86)
const CpuKernels kAvx2Table =
    BITFLEET_CPU_TABLE_FROM(avx2, avx2, nullptr, nullptr, avx2::QkI8, avx2::PvI8, nullptr, CpuVariant::kAvx2, "avx2");
const CpuKernels kAvx512Table =
    BITFLEET_CPU_TABLE_FROM(avx512, avx512, avx512::AttendRun, avx512::AttendRunI8, avx512::QkI8, avx512::PvI8,
                            nullptr, CpuVariant::kAvx512Vnni, "avx512vnni");
// avx512vnni plus the AMX batch matmuls.
const CpuKernels kAmxTable =
    BITFLEET_CPU_TABLE_FROM(avx512, amx, avx512::AttendRun, avx512::AttendRunI8, avx512::QkI8, avx512::PvI8,
                            amx::TileActivations, CpuVariant::kAmx, "amx");

// AMX needs the CPU features, the OS enabling the tile state in XCR0, and (Linux) this process
// asking for permission to use it (arch_prctl ARCH_REQ_XCOMP_PERM; the kernel then grows each
// thread's signal/context-switch state on first use). Asked once, for the whole process.
bool AmxUsable() {
#if defined(__linux__)
  static const bool usable = [] {
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-int8")) return false;
    constexpr long kArchGetXcompPerm = 0x1022;
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
    unsigned long permitted = 0;
    if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &permitted) != 0) return false;
    return (permitted & (1ul << kXfeatureXtiledata)) != 0;
  }();
  return usable;
#else
  return false;
#endif
}
#endif

const CpuKernels& ChooseOnce() {
  const CpuVariant best = BestSupportedVariant();
  std::string note;
  const CpuVariant chosen = ChooseCpuVariant(best, std::getenv("BITFLEET_CPU_VARIANT"), &note);
  if (!note.empty()) Logger("kernels")->warn("{}", note);
  Logger("kernels")->debug("CPU kernel variant: {}", CpuVariantString(chosen));
  const CpuKernels* table = KernelsFor(chosen);
  return table != nullptr ? *table : kScalarTable;
}

}  // namespace

const char* CpuVariantString(CpuVariant variant) {
  switch (variant) {
    case CpuVariant::kAvx2:
      return "avx2";
    case CpuVariant::kAvx512Vnni:
      return "avx512vnni";
    case CpuVariant::kAmx:
      return "amx";
    case CpuVariant::kScalar:
      break;
  }
  return "scalar";
}

std::optional<CpuVariant> ParseCpuVariant(std::string_view name) {
  for (CpuVariant v : {CpuVariant::kScalar, CpuVariant::kAvx2, CpuVariant::kAvx512Vnni, CpuVariant::kAmx}) {
    if (name == CpuVariantString(v)) return v;
  }
  return std::nullopt;
}

bool CpuSupports(CpuVariant variant) {
  switch (variant) {
    case CpuVariant::kScalar:
      return true;
#if defined(BITFLEET_KERNELS_X86)
    case CpuVariant::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case CpuVariant::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c");
    case CpuVariant::kAmx:
      return CpuSupports(CpuVariant::kAvx512Vnni) && AmxUsable();
#endif
    default:
      return false;
  }
}

CpuVariant BestSupportedVariant() {
  if (CpuSupports(CpuVariant::kAmx)) return CpuVariant::kAmx;
  if (CpuSupports(CpuVariant::kAvx512Vnni)) return CpuVariant::kAvx512Vnni;
  if (CpuSupports(CpuVariant::kAvx2)) return CpuVariant::kAvx2;
  return CpuVariant::kScalar;
}

CpuVariant ChooseCpuVariant(CpuVariant best, const char* override_value, std::string* note) {
  if (override_value == nullptr || *override_value == '\0') return best;
  const std::optional<CpuVariant> requested = ParseCpuVariant(override_value);
  if (!requested) {
    if (note) {
      *note = absl::StrCat("BITFLEET_CPU_VARIANT='", override_value, "' is not one of scalar|avx2|avx512vnni|amx; using ",
                           CpuVariantString(best));
    }
    return best;
  }
  if (static_cast<int>(*requested) > static_cast<int>(best)) {
    if (note) {
      *note = absl::StrCat("BITFLEET_CPU_VARIANT=", override_value, " is not supported by this CPU; using ",
                           CpuVariantString(best));
    }
    return best;
  }
  return *requested;
}

const CpuKernels& ScalarKernels() { return kScalarTable; }

const CpuKernels* KernelsFor(CpuVariant variant) {
  if (!CpuSupports(variant)) return nullptr;
  switch (variant) {
    case CpuVariant::kScalar:
      return &kScalarTable;
#if defined(BITFLEET_KERNELS_X86)
    case CpuVariant::kAvx2:
      return &kAvx2Table;
    case CpuVariant::kAvx512Vnni:
      return &kAvx512Table;
    case CpuVariant::kAmx:
      return &kAmxTable;
#endif
    default:
      return nullptr;
  }
}

const CpuKernels& ActiveKernels() {
  static const CpuKernels& chosen = ChooseOnce();
  return chosen;
}

}  // namespace bitfleet::kernels::cpu

namespace bitfleet::kernels {
std::string CpuVariantName() { return cpu::ActiveKernels().name; }
}  // namespace bitfleet::kernels

// CPU variant selection: which SIMD variant runs, chosen once at start-up. Internal to kernels/
// (tests use it to run every variant the CPU supports).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "kernels/cpu/kernel_table.h"

namespace bitfleet::kernels::cpu {

// "scalar", "avx2", "avx512vnni", "amx".
const char* CpuVariantString(CpuVariant variant);
std::optional<CpuVariant> ParseCpuVariant(std::string_view name);

// Whether this binary contains `variant` and this CPU (and OS) can run it. avx2 needs AVX2, FMA
// and F16C; avx512vnni needs AVX-512 F/BW/VL/DQ/VNNI and F16C; amx needs avx512vnni, AMX-TILE
// and AMX-INT8, and the OS granting this process the tile state (asked for on first call).
bool CpuSupports(CpuVariant variant);
// The best variant CpuSupports.
CpuVariant BestSupportedVariant();

// The selection rule, pure for testing: `override_value` is BITFLEET_CPU_VARIANT (null or empty:
// none). A known variant at or below `best` is taken; a higher one falls back to `best`; an
// unknown name keeps `best`. `note` (optional) receives a line explaining any fallback.
CpuVariant ChooseCpuVariant(CpuVariant best, const char* override_value, std::string* note);

}  // namespace bitfleet::kernels::cpu

// Variant selection: the rule, the choice made in this process, and the BITFLEET_CPU_VARIANT
// override (CTest runs this binary once more with the variable set; see CMakeLists.txt).
#include "kernels/cpu/dispatch.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "kernels/matmul.h"

namespace bitfleet::kernels::cpu {
namespace {

TEST(Dispatch, ParsesNames) {
  EXPECT_EQ(ParseCpuVariant("scalar"), CpuVariant::kScalar);
  EXPECT_EQ(ParseCpuVariant("avx2"), CpuVariant::kAvx2);
  EXPECT_EQ(ParseCpuVariant("avx512vnni"), CpuVariant::kAvx512Vnni);
  EXPECT_EQ(ParseCpuVariant("amx"), CpuVariant::kAmx);
  EXPECT_EQ(ParseCpuVariant("AVX2"), std::nullopt);
  EXPECT_EQ(ParseCpuVariant(""), std::nullopt);
}

TEST(Dispatch, ChooseRule) {
  std::string note;
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAvx512Vnni, nullptr, &note), CpuVariant::kAvx512Vnni);
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAvx512Vnni, "", &note), CpuVariant::kAvx512Vnni);
  EXPECT_TRUE(note.empty());
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAvx512Vnni, "scalar", &note), CpuVariant::kScalar);
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAvx512Vnni, "avx2", &note), CpuVariant::kAvx2);
  EXPECT_TRUE(note.empty());
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAmx, "avx512vnni", &note), CpuVariant::kAvx512Vnni);
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAmx, nullptr, &note), CpuVariant::kAmx);
  EXPECT_TRUE(note.empty());
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAvx512Vnni, "amx", &note), CpuVariant::kAvx512Vnni);
  EXPECT_NE(note.find("not supported"), std::string::npos);
  note.clear();
  // Higher than the CPU supports: keep the best, and say so.
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAvx2, "avx512vnni", &note), CpuVariant::kAvx2);
  EXPECT_NE(note.find("not supported"), std::string::npos);
  note.clear();
  EXPECT_EQ(ChooseCpuVariant(CpuVariant::kAvx2, "sse9", &note), CpuVariant::kAvx2);
  EXPECT_NE(note.find("sse9"), std::string::npos);
}

TEST(Dispatch, PicksASupportedVariant) {
  const std::string name = CpuVariantName();
  const auto variant = ParseCpuVariant(name);
  ASSERT_TRUE(variant.has_value()) << name;
  EXPECT_TRUE(CpuSupports(*variant));
  EXPECT_NE(KernelsFor(*variant), nullptr);
  EXPECT_TRUE(CpuSupports(CpuVariant::kScalar));
  const char* forced = std::getenv("BITFLEET_CPU_VARIANT");
  if (forced == nullptr || *forced == '\0') {
    EXPECT_EQ(*variant, BestSupportedVariant()) << "without an override the best variant runs";
  }
}

TEST(Dispatch, EnvOverrideApplies) {
  const char* expect = std::getenv("BITFLEET_EXPECT_VARIANT");
  if (expect == nullptr) GTEST_SKIP() << "run by the kernels_dispatch_env_* CTest entries";
  const auto wanted = ParseCpuVariant(expect);
  ASSERT_TRUE(wanted.has_value());
  if (!CpuSupports(*wanted)) GTEST_SKIP() << "this CPU lacks " << expect;
  EXPECT_EQ(CpuVariantName(), expect);
}

#if defined(__x86_64__)
TEST(Dispatch, ReportsCpuFeatures) {
  // Not an assertion on the machine, a record in the log of what ran.
  for (CpuVariant v : {CpuVariant::kScalar, CpuVariant::kAvx2, CpuVariant::kAvx512Vnni, CpuVariant::kAmx}) {
    std::printf("[kernels] variant %-10s %s\n", CpuVariantString(v), CpuSupports(v) ? "supported" : "not supported");
  }
}
#endif

}  // namespace
}  // namespace bitfleet::kernels::cpu

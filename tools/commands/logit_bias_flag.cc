#include "tools/commands/logit_bias_flag.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace bitfleet::tools {
namespace {

Status BadEntry(const std::string& entry, const char* why) {
  return absl::InvalidArgumentError(absl::StrCat("--logit-bias '", entry, "': ", why));
}

}  // namespace

void AddLogitBiasFlag(CLI::App& cmd, std::vector<std::string>* entries) {
  cmd.add_option("--logit-bias", *entries,
                 "ID=BIAS: add BIAS (-100..100) to token ID's logit before sampling (repeatable; -100 in "
                 "practice bans the token, 100 forces it), as OpenAI's logit_bias");
}

StatusOr<std::vector<std::pair<int32_t, float>>> ParseLogitBias(std::span<const std::string> entries) {
  std::vector<std::pair<int32_t, float>> out;
  for (const std::string& entry : entries) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) return BadEntry(entry, "expected ID=BIAS");
    const char* begin = entry.data();
    const char* mid = begin + eq;
    const char* end = begin + entry.size();
    int32_t token = 0;
    auto [token_end, token_error] = std::from_chars(begin, mid, token);
    if (eq == 0 || token_error != std::errc() || token_end != mid) return BadEntry(entry, "ID is not a token id");
    if (token < 0) return BadEntry(entry, "ID must not be negative");
    float bias = 0.0f;
    auto [bias_end, bias_error] = std::from_chars(mid + 1, end, bias);
    if (mid + 1 == end || bias_error != std::errc() || bias_end != end || !std::isfinite(bias)) {
      return BadEntry(entry, "BIAS is not a number");
    }
    out.emplace_back(token, bias);
  }
  std::sort(out.begin(), out.end());
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].first == out[i - 1].first) {
      return absl::InvalidArgumentError(absl::StrCat("--logit-bias: token ", out[i].first, " is given twice"));
    }
  }
  return out;
}

}  // namespace bitfleet::tools

// `--logit-bias ID=BIAS` (repeatable), shared by `run` and `generate`: OpenAI's logit_bias from
// the command line.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "core/status.h"

namespace bitfleet::tools {

// Adds the repeatable option, collecting its raw entries into `entries`.
void AddLogitBiasFlag(CLI::App& cmd, std::vector<std::string>* entries);

// Parses "ID=BIAS" entries into (token, bias) pairs in ascending token order. INVALID_ARGUMENT
// naming the entry for a malformed one, a negative id, a non-finite bias or an id given twice;
// the ranges against the model (vocabulary, [-100, 100]) are the sampler's to check.
StatusOr<std::vector<std::pair<int32_t, float>>> ParseLogitBias(std::span<const std::string> entries);

}  // namespace bitfleet::tools

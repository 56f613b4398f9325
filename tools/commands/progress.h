// Progress lines for long model jobs (synth, quantize, convert): "\rWHAT: 12/48 tensors (25%)"
// on stderr when it is a terminal, nothing when stderr is redirected (logs and CI stay clean).
#pragma once

#include <cstddef>
#include <functional>

namespace bitfleet::tools {

// A callback for GgufWriter-style progress (done, total), or null when stderr is not a TTY.
// `what` must outlive the callback (pass a string literal).
std::function<void(size_t, size_t)> TerminalProgress(const char* what);

}  // namespace bitfleet::tools

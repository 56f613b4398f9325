#include "tools/commands/progress.h"

#include <unistd.h>

#include <cstdio>

namespace bitfleet::tools {

std::function<void(size_t, size_t)> TerminalProgress(const char* what) {
  if (isatty(STDERR_FILENO) == 0) return nullptr;
  return [what](size_t done, size_t total) {
    std::fprintf(stderr, "\r%s: %zu/%zu tensors (%zu%%)", what, done, total, total ? done * 100 / total : 100);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
}

}  // namespace bitfleet::tools

// Whole small files (key files, certificates, text to evaluate) read into memory. Model files
// are mapped instead (mapped_file.h).
#pragma once

#include <string>

#include "core/status.h"

namespace bitfleet {

// The file's bytes. NOT_FOUND naming the path when it cannot be opened or read.
StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace bitfleet

// `--json` and `--json-schema FILE`, shared by `generate` and `bench serve`: the response_format
// a request asks for (docs/protocol.md, "Structured outputs").
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "bitfleet/v1/inference.pb.h"
#include "core/status.h"

namespace bitfleet::tools {

struct ResponseFormatFlags {
  bool json = false;        // response_format JSON_OBJECT
  std::string schema_file;  // response_format JSON_SCHEMA with this file's schema
  // Constrained answers end with their document, so they cannot ignore end-of-generation.
  bool constrained() const { return json || !schema_file.empty(); }
};

// Adds both options (mutually exclusive).
void AddResponseFormatFlags(CLI::App& cmd, ResponseFormatFlags* flags);

// A request holding only the response_format fields `flags` ask for (the schema file read now),
// to merge into each request. NOT_FOUND naming a file that cannot be read.
StatusOr<v1::GenerateRequest> ResponseFormatRequest(const ResponseFormatFlags& flags);

}  // namespace bitfleet::tools

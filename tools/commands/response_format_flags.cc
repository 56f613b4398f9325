#include "tools/commands/response_format_flags.h"

#include <utility>

#include "core/read_file.h"

namespace bitfleet::tools {

void AddResponseFormatFlags(CLI::App& cmd, ResponseFormatFlags* flags) {
  cmd.add_flag("--json", flags->json,
               "The answer must be one JSON object: the server masks sampling to it (response_format "
               "json_object); it ends with the object, or unfinished at the token limit");
  cmd.add_option("--json-schema", flags->schema_file,
                 "The answer must be a JSON value of the JSON Schema in this file (response_format json_schema; "
                 "docs/protocol.md lists the keywords enforced; properties come in the file's order); it may end "
                 "before the token limit")
      ->check(CLI::ExistingFile)
      ->excludes("--json");
}

StatusOr<v1::GenerateRequest> ResponseFormatRequest(const ResponseFormatFlags& flags) {
  v1::GenerateRequest request;
  if (flags.json) request.set_response_format(v1::RESPONSE_FORMAT_JSON_OBJECT);
  if (!flags.schema_file.empty()) {
    BF_ASSIGN_OR_RETURN(std::string schema, ReadFileToString(flags.schema_file));
    request.set_response_format(v1::RESPONSE_FORMAT_JSON_SCHEMA);
    request.set_json_schema(std::move(schema));
  }
  return request;
}

}  // namespace bitfleet::tools

// libFuzzer target for the client APIs' own parsers (requests and key files are hostile input,
// DESIGN.md §9): the OpenAI-compatible request bodies, /tokenize and /detokenize bodies
// (openai_protocol.h), the API key file and bearer values (api_auth.h), JSON mode's byte
// grammar (json_grammar.h: it decides which tokens a sampler may draw) and the JSON Schema
// compiler with the grammars it builds (json_schema.h). The first input byte picks the target
// ((byte - '0') % 7), the rest is its input.
// Accepted requests are also rendered back through every response builder with their own text
// (which may be invalid UTF-8). Nothing may crash, leak, throw or trip a sanitizer.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/api_auth.h"
#include "coordinator/json_grammar.h"
#include "coordinator/json_schema.h"
#include "coordinator/openai_protocol.h"
#include "coordinator/openai_tools.h"

namespace bitfleet::coordinator {
namespace {

void FuzzRequest(OpenAiEndpoint endpoint, std::string_view body) {
  StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, body);
  if (!parsed.ok()) {
    OpenAiErrorBody(parsed.status());
    return;
  }
  const v1::GenerateRequest& generate = parsed->generate();
  const std::string text = generate.prompt() + (generate.stop_size() > 0 ? generate.stop(0) : std::string());
  OpenAiResponseHeader header{endpoint, "cmpl-fuzz", generate.model(), 0};
  if (parsed->tools) {
    // A forced tool call's answer, whole and streamed, with the request's text as the answer.
    header.tools = std::make_shared<const OpenAiTools>(*parsed->tools);
    OpenAiToolCallChunkBody(header, text, v1::FINISH_REASON_END_OF_SEQUENCE, 0);
    OpenAiCompletionBody(header, generate.json_schema(), v1::FINISH_REASON_END_OF_SEQUENCE, v1::Usage());
    // The same text streamed as calls, one byte more at a time: pieces stay inside the text and
    // calls open in order.
    ToolCallStream stream(*header.tools);
    int calls = 0;
    for (size_t n = 1; n <= text.size() && n <= 4096; ++n) {
      for (const ToolCallStream::Delta& d : stream.Update(std::string_view(text).substr(0, n), n == text.size())) {
        if (d.opens ? d.call != calls++ : d.call != calls - 1 || d.arguments.size() > n) __builtin_trap();
      }
    }
  }
  v1::Usage usage;
  usage.set_prompt_tokens(generate.max_tokens());
  OpenAiCompletionBody(header, text, v1::FINISH_REASON_LENGTH, usage);
  std::vector<OpenAiChoice> choices;
  // An echoed prompt's unscored first token, then a scored one.
  const std::vector<OpenAiTokenLogprobs> logprobs = {{3, text, text, 0.0f, {}, /*scored=*/!parsed->echo},
                                                     {1, text, text, -1.0f, {{2, text, text, -2.0f}}}};
  for (const v1::GenerateRequest& choice : parsed->choices) {
    const bool scored = choice.logprobs() || choice.prompt_logprobs();
    choices.push_back({choice.prompt(), v1::FINISH_REASON_STOP_STRING, scored ? &logprobs : nullptr});
  }
  OpenAiCompletionBody(header, choices, usage);
  OpenAiChunkBody(header, text, v1::FINISH_REASON_UNSPECIFIED, true, &logprobs, 3, 1);
  OpenAiUsageChunkBody(header, usage);
  OpenAiModelsBody(generate.model(), 0, static_cast<int32_t>(generate.max_tokens()));
}

void FuzzTokenize(std::string_view body) {
  StatusOr<OpenAiTokenizeRequest> parsed = ParseOpenAiTokenize(body);
  if (!parsed.ok()) OpenAiErrorBody(parsed.status());
}

void FuzzDetokenize(std::string_view body) {
  StatusOr<std::vector<int32_t>> ids = ParseOpenAiDetokenize(body);
  if (ids.ok()) OpenAiTokenizeBody(*ids, 0);
}

void FuzzKeys(std::string_view input) {
  // A key file, then (after its last newline) a bearer value to look up in it.
  const size_t split = input.rfind('\n');
  const std::string_view file = input.substr(0, split);
  StatusOr<std::unique_ptr<ApiKeys>> keys = ApiKeys::Parse(file);
  if (!keys.ok() || split == std::string_view::npos) return;
  (*keys)->Authenticate(input.substr(split + 1)).IgnoreError();
}

// Bytes fed to a JSON grammar. Its contract, checked as a crash: a refused byte leaves the state
// as it was, equal states hash equally, a finished document takes no byte unless a top-level
// number or literal may go on, and an unfinished one always has some byte to go on with (a
// masked sampler is never stuck).
void FuzzJsonBytes(JsonState state, std::string_view input) {
  for (char c : input) {
    const JsonState before = state;
    if (!state.Advance(static_cast<uint8_t>(c))) {
      if (!(state == before && state.Hash() == before.Hash())) __builtin_trap();
      continue;
    }
    if (state.complete()) continue;
    bool some = false;
    for (int b = 0; b < 256 && !some; ++b) {
      JsonState next = state;
      some = next.Advance(static_cast<uint8_t>(b));
    }
    if (!some) __builtin_trap();
  }
}

// A schema (the input up to its last newline) compiled strictly and as best effort, then the
// bytes after it fed to each grammar.
void FuzzJsonSchema(std::string_view input) {
  const size_t split = input.rfind('\n');
  for (bool best_effort : {false, true}) {
    StatusOr<std::shared_ptr<const JsonSchema>> schema = JsonSchema::Compile(input.substr(0, split), best_effort);
    if (!schema.ok() || split == std::string_view::npos) continue;
    FuzzJsonBytes(JsonState(schema->get()), input.substr(split + 1));
  }
}

}  // namespace
}  // namespace bitfleet::coordinator

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitfleet::coordinator;
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  // Seeds begin with the digit of their target.
  switch (static_cast<uint8_t>(data[0] - '0') % 7) {
    case 0:
      FuzzRequest(OpenAiEndpoint::kCompletions, rest);
      break;
    case 1:
      FuzzRequest(OpenAiEndpoint::kChatCompletions, rest);
      break;
    case 2:
      FuzzKeys(rest);
      break;
    case 3:
      FuzzTokenize(rest);
      break;
    case 5:
      FuzzJsonBytes(JsonState(), rest);
      break;
    case 6:
      FuzzJsonSchema(rest);
      break;
    default:
      FuzzDetokenize(rest);
      break;
  }
  return 0;
}

// Turning a client's Generate request (inference.proto) into a scheduler request, with every
// check DESIGN.md §9 asks for made before anything is scheduled: requests are hostile input,
// and one bad request must never reach a plan (where it would fail its batch-mates).
//
// Checks, in order (the first failure is returned, with a message naming the field):
//   NOT_FOUND         model names another model than the served one
//   FAILED_PRECONDITION  a chat for a model without a usable chat template
//   INVALID_ARGUMENT  no prompt; empty prompt; prompt text over max_prompt_bytes; a token id
//                     outside the vocabulary; a chat without messages or with an unknown role;
//                     more than max_stop_strings stop strings, an empty
//                     one, one over max_stop_bytes or not valid UTF-8; non-finite or
//                     out-of-range sampling values (the workers' ranges); the prompt filling the
//                     context; prompt + max_tokens beyond the context
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitfleet/v1/inference.pb.h"
#include "coordinator/chat_prompt.h"
#include "coordinator/json_constraint.h"
#include "coordinator/request.h"
#include "core/status.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {

struct ApiLimits {
  std::string model_name;  // Generate.model must be this or empty
  int32_t n_vocab = 0;
  int32_t max_context = 0;  // positions per sequence
  size_t max_prompt_bytes = size_t{1} << 20;
  int max_stop_strings = 8;
  size_t max_stop_bytes = 256;
  // The grammars response_format JSON_OBJECT / JSON_SCHEMA mask with; null: such requests are
  // refused.
  std::shared_ptr<JsonGrammars> json_grammars;
  // The model's chat template (chat_prompt.h) that `chat` inputs are rendered with; null when
  // chats cannot be served, and then `chat_unavailable` is what such requests are told.
  std::shared_ptr<const ChatPrompt> chat;
  std::string chat_unavailable = "the served model has no chat template: send a prompt instead";
};

struct ParsedGenerate {
  // prompt, sampling (defaults filled in, seed chosen), max_tokens (0 resolved to the rest of
  // the context) and ignore_eos; the caller adds sink, deadline, ids and tenant.
  GenerateRequest request;
  std::vector<std::string> stop;
};

// Sampling defaults for unset fields (inference.proto). `seed` is used when none is given.
StepSampling SamplingFromProto(const v1::SamplingParams& params, uint64_t seed);

// Validates `in` (see the header comment) and tokenizes a text prompt with `tokenizer`
// (BOS/EOS as the vocabulary asks, special tokens written in the text are plain text) or a chat
// with `chat` (limits.chat; null: the model has no usable chat template, and a chat is
// FAILED_PRECONDITION with limits.chat_unavailable).
StatusOr<ParsedGenerate> ParseGenerateRequest(const v1::GenerateRequest& in, const ApiLimits& limits,
                                              const tokenizer::Tokenizer& tokenizer, const ChatPrompt* chat,
                                              uint64_t seed);

// Tokenize, as both client APIs answer it: `text` encoded with `add_special` (BOS/EOS as the
// vocabulary asks); INVALID_ARGUMENT over limits.max_prompt_bytes.
StatusOr<std::vector<int32_t>> TokenizeText(const tokenizer::Tokenizer& tokenizer, const ApiLimits& limits,
                                            std::string_view text, bool add_special);
// Detokenize: INVALID_ARGUMENT for an id outside the vocabulary.
StatusOr<std::string> DetokenizeIds(const tokenizer::Tokenizer& tokenizer, std::span<const int32_t> ids);

}  // namespace bitfleet::coordinator

#include "coordinator/api_request.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#include "coordinator/request_validation.h"
#include "model/tokenizer/utf8.h"

namespace bitfleet::coordinator {
namespace {

Status CheckStops(const google::protobuf::RepeatedPtrField<std::string>& stops, const ApiLimits& limits) {
  if (stops.size() > limits.max_stop_strings) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", limits.max_stop_strings, " stop strings, got ", stops.size()));
  }
  for (int i = 0; i < stops.size(); ++i) {
    const std::string& stop = stops[i];
    if (stop.empty()) return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is empty"));
    if (stop.size() > limits.max_stop_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop[", i, "] has ", stop.size(), " bytes, limit ", limits.max_stop_bytes));
    }
    if (!tokenizer::IsValidUtf8(stop)) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

// response_format's constraint: null for text.
StatusOr<std::shared_ptr<OutputConstraint>> ResponseConstraint(const v1::GenerateRequest& in,
                                                               const ApiLimits& limits) {
  const bool or_text = in.response_format() == v1::RESPONSE_FORMAT_JSON_SCHEMA_OR_TEXT;
  const bool schema = in.response_format() == v1::RESPONSE_FORMAT_JSON_SCHEMA || or_text;
  if (!in.json_schema().empty() && !schema) {
    return absl::InvalidArgumentError("json_schema is given, but response_format is not JSON_SCHEMA");
  }
  if (in.response_format() == v1::RESPONSE_FORMAT_TEXT) return std::shared_ptr<OutputConstraint>();
  if (!schema && in.response_format() != v1::RESPONSE_FORMAT_JSON_OBJECT) {
    return absl::InvalidArgumentError(absl::StrCat("unknown response_format ", static_cast<int>(in.response_format())));
  }
  const char* name = or_text ? "JSON_SCHEMA_OR_TEXT" : schema ? "JSON_SCHEMA" : "JSON_OBJECT";
  if (limits.json_grammars == nullptr) {
    return absl::UnimplementedError(absl::StrCat("response_format ", name, " is not available on this server"));
  }
  if (in.ignore_eos()) {
    return absl::InvalidArgumentError(
        absl::StrCat("response_format ", name, " ends with end-of-generation: not with ignore_eos"));
  }
  if (schema && in.json_schema().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("response_format ", name, " needs json_schema"));
  }
  std::shared_ptr<JsonGrammar> grammar;
  if (schema) {
    BF_ASSIGN_OR_RETURN(grammar, limits.json_grammars->ForSchema(in.json_schema(), in.json_schema_best_effort()));
  } else {
    grammar = limits.json_grammars->AnyObject();
  }
  std::shared_ptr<OutputConstraint> constraint;
  if (or_text) {
    constraint = std::make_shared<JsonOrTextConstraint>(std::move(grammar));
  } else {
    constraint = std::make_shared<JsonConstraint>(std::move(grammar));
  }
  if (MaskEmpty(constraint->AllowedTokens())) {
    return absl::FailedPreconditionError(
        absl::StrCat("no token of this model's vocabulary can start the response_format ", name, "'s text"));
  }
  return constraint;
}

}  // namespace

StepSampling SamplingFromProto(const v1::SamplingParams& p, uint64_t seed) {
  StepSampling s;
  s.temperature = p.has_temperature() ? p.temperature() : 1.0f;
  s.top_k = p.has_top_k() ? p.top_k() : 0;
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  s.min_p = p.has_min_p() ? p.min_p() : 0.0f;
  s.repeat_penalty = p.has_repeat_penalty() ? p.repeat_penalty() : 1.0f;
  s.presence_penalty = p.has_presence_penalty() ? p.presence_penalty() : 0.0f;
  s.frequency_penalty = p.has_frequency_penalty() ? p.frequency_penalty() : 0.0f;
  s.penalty_last_n = p.has_penalty_last_n() ? p.penalty_last_n() : 64;
  s.seed = p.has_seed() ? p.seed() : seed;
  // A proto map has no order: the plan carries the biases by ascending token.
  for (const auto& [token, bias] : p.logit_bias()) s.logit_bias.push_back({token, bias});
  std::sort(s.logit_bias.begin(), s.logit_bias.end(),
            [](const TokenBias& a, const TokenBias& b) { return a.token < b.token; });
  return s;
}

StatusOr<ParsedGenerate> ParseGenerateRequest(const v1::GenerateRequest& in, const ApiLimits& limits,
                                              const tokenizer::Tokenizer& tokenizer, const ChatPrompt* chat,
                                              uint64_t seed) {
  if (!in.model().empty() && in.model() != limits.model_name) {
    return absl::NotFoundError(
        absl::StrCat("model '", in.model(), "' is not served here (this server serves '", limits.model_name, "')"));
  }
  ParsedGenerate out;
  GenerateRequest& request = out.request;
  switch (in.input_case()) {
    case v1::GenerateRequest::kPrompt: {
      const std::string& text = in.prompt();
      if (text.empty()) return absl::InvalidArgumentError("empty prompt");
      if (text.size() > limits.max_prompt_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt has ", text.size(), " bytes, limit ", limits.max_prompt_bytes));
      }
      break;  // tokenized below, after the cheap checks
    }
    case v1::GenerateRequest::kPromptTokens: {
      const auto& ids = in.prompt_tokens().ids();
      if (ids.empty()) return absl::InvalidArgumentError("empty prompt");
      if (ids.size() > limits.max_context) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt has ", ids.size(), " tokens; the context holds ", limits.max_context));
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= limits.n_vocab) {
          return absl::InvalidArgumentError(
              absl::StrCat("prompt_tokens[", i, "] = ", ids[i], " is outside the vocabulary of ", limits.n_vocab));
        }
      }
      request.prompt.assign(ids.begin(), ids.end());
      break;
    }
    case v1::GenerateRequest::kChat: {
      if (chat == nullptr) {
        return absl::FailedPreconditionError(limits.chat_unavailable);
      }
      if (in.chat().messages().empty()) return absl::InvalidArgumentError("empty prompt: chat has no messages");
      if (in.chat().continue_final_message() && in.response_format() != v1::RESPONSE_FORMAT_TEXT) {
        // The constraint would start mid-answer, where the JSON it describes has begun already.
        return absl::InvalidArgumentError(
            "continue_final_message cannot be combined with a JSON response_format or tools");
      }
      break;  // rendered and tokenized below, after the cheap checks
    }
    default:
      return absl::InvalidArgumentError("no prompt: set prompt, prompt_tokens or chat");
  }
  BF_RETURN_IF_ERROR(CheckStops(in.stop(), limits));
  request.sampling = SamplingFromProto(in.sampling(), seed);
  request.sampling.logprobs = in.logprobs();
  request.prompt_logprobs = in.prompt_logprobs();
  // Clamped to int32 so that a huge value is refused by name below, not wrapped.
  request.sampling.top_logprobs = static_cast<int32_t>(std::min<uint32_t>(in.top_logprobs(), 1u << 30));
  BF_RETURN_IF_ERROR(ValidateStepSampling(request.sampling, limits.n_vocab));
  if (in.max_tokens() > static_cast<uint32_t>(limits.max_context)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens ", in.max_tokens(), " exceeds the context of ", limits.max_context, " tokens"));
  }
  if (in.input_case() == v1::GenerateRequest::kPrompt) {
    tokenizer::EncodeOptions encode;
    encode.max_input_bytes = limits.max_prompt_bytes;
    BF_ASSIGN_OR_RETURN(request.prompt, tokenizer.Encode(in.prompt(), encode));
    if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  } else if (in.input_case() == v1::GenerateRequest::kChat) {
    BF_ASSIGN_OR_RETURN(request.prompt, chat->Encode(in.chat(), tokenizer, limits.max_prompt_bytes));
  }
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len >= limits.max_context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt has ", prompt_len, " tokens; the context holds ",
                                                   limits.max_context, " (including the generated tokens)"));
  }
  request.max_tokens = in.max_tokens() == 0 ? static_cast<int32_t>(limits.max_context - prompt_len)
                                            : static_cast<int32_t>(in.max_tokens());
  if (prompt_len + request.max_tokens > limits.max_context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt_len, " tokens) + max_tokens (",
                                                   request.max_tokens, ") exceeds the context of ", limits.max_context,
                                                   " tokens"));
  }
  request.ignore_eos = in.ignore_eos();
  BF_ASSIGN_OR_RETURN(request.constraint, ResponseConstraint(in, limits));
  out.stop.assign(in.stop().begin(), in.stop().end());
  return out;
}

StatusOr<std::vector<int32_t>> TokenizeText(const tokenizer::Tokenizer& tokenizer, const ApiLimits& limits,
                                            std::string_view text, bool add_special) {
  if (text.size() > limits.max_prompt_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("text has ", text.size(), " bytes, limit ", limits.max_prompt_bytes));
  }
  tokenizer::EncodeOptions encode;
  encode.add_special = add_special;
  encode.max_input_bytes = limits.max_prompt_bytes;
  return tokenizer.Encode(text, encode);
}

StatusOr<std::string> DetokenizeIds(const tokenizer::Tokenizer& tokenizer, std::span<const int32_t> ids) {
  StatusOr<std::string> text = tokenizer.Decode(ids);
  if (!text.ok()) return absl::InvalidArgumentError(std::string(text.status().message()));
  return text;
}

}  // namespace bitfleet::coordinator

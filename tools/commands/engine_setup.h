// Shared plumbing of the engine commands (run, logits, eval, bench decode): loading a model
// file into a ModelRunner (and its tokenizer), exit codes for Status errors, token-list
// parsing and the ChatML prompt rendering used by `run --chat`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/model_runner.h"

namespace bitfleet::tools {

// Default --threads: the machine's hardware threads (at least 1).
int DefaultThreads();

struct LoadedModel {
  std::shared_ptr<const gguf::GgufFile> file;
  std::unique_ptr<worker::ModelRunner> runner;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;  // null unless asked for
};

// Opens `path`, builds a runner with `options` (max_context 0: the model's context) and,
// when `with_tokenizer`, the tokenizer from the same file's metadata.
StatusOr<LoadedModel> LoadModel(const std::string& path, const worker::RunnerOptions& options, bool with_tokenizer);

// Exit code for a failed command: 2 for bad input (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE),
// 1 otherwise. Logs the message under `module`.
int ReportError(const std::string& module, const Status& status);

// Parses "1,2, 3\n4" (commas and/or whitespace) into token ids; INVALID_ARGUMENT on anything
// else or on a value outside int32.
StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text);

// Renders a one-turn ChatML conversation ("<|im_start|>role\ncontent<|im_end|>\n" per message,
// then "<|im_start|>assistant\n"). An empty `system` takes the default system message that
// `chat_template` (tokenizer.chat_template) writes literally, if any. FAILED_PRECONDITION when
// the template is not ChatML (no <|im_start|>).
StatusOr<std::string> RenderChatMl(const std::string& chat_template, const std::string& system,
                                   const std::string& user);

}  // namespace bitfleet::tools

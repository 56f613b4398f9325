// `bitfleet eval --target ADDR`: the perplexity of a served model, measured through its gRPC API
// with the chunks and scoring `bitfleet eval -m` uses (worker/perplexity.h), so the two figures
// compare directly: a deployment's quality gate (tensor parallelism, the kernels the workers run,
// the KV cache type) without loading the model in the client.
//
// Each chunk is one Generate call with prompt_tokens = the chunk, prompt_logprobs and
// max_tokens 1; the server scores every prompt token, the second half (or all) is summed here.
// The text is tokenized by the server (Tokenize): a text over one call's 1 MiB goes in pieces
// (SplitForTokenize).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tools/commands/grpc_client.h"
#include "worker/perplexity.h"

namespace bitfleet::tools {

struct ServedEvalOptions {
  std::string target;
  std::string text_file;
  worker::PerplexityOptions perplexity;  // bos is asked of the server
  int concurrency = 8;                   // chunks in flight
  double wait_ready_s = 0;
  ClientSecurity security;
};

// Bytes of text per Tokenize call (the API takes at most 1 MiB).
inline constexpr size_t kTokenizePieceBytes = size_t{1} << 19;

// `text` in pieces of at most `max_bytes`, each cut just after a newline that a non-whitespace
// byte follows (the last such point within the limit), where a byte-level BPE pre-tokenizer
// splits anyway, so the pieces' tokens are the whole text's; a SentencePiece vocabulary adds its
// leading space at each piece (a token may differ there). A stretch with no such newline is cut
// at the limit.
std::vector<std::string_view> SplitForTokenize(std::string_view text, size_t max_bytes);

// Prints one JSON object on stdout (the keys of `bitfleet eval -m`, with "target" and the served
// "model" name); progress to stderr.
Status RunServedEval(const ServedEvalOptions& options);

}  // namespace bitfleet::tools

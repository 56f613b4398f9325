// `bitfleet eval --target ADDR`: the perplexity of a served model, measured through its gRPC API
// with the chunks and scoring `bitfleet eval -m` uses (worker/perplexity.h), so the two figures
// compare directly: a deployment's quality gate (tensor parallelism, the kernels the workers run,
// the KV cache type) without loading the model in the client.
//
// Each chunk is one Generate call with prompt_tokens = the chunk, prompt_logprobs and
// max_tokens 1; the server scores every prompt token, the second half (or all) is summed here.
// The text is tokenized by the server (Tokenize), so it must fit one call (1 MiB).
#pragma once

#include <string>

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

// Prints one JSON object on stdout (the keys of `bitfleet eval -m`, with "target" and the served
// "model" name); progress to stderr.
Status RunServedEval(const ServedEvalOptions& options);

}  // namespace bitfleet::tools

#include "tools/commands/eval_served.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bitfleet/v1/inference.grpc.pb.h"
#include "coordinator/step_codec.h"
#include "core/logging.h"
#include "core/read_file.h"
#include "grpcpp/create_channel.h"
#include "nlohmann/json.hpp"
#include "worker/eval_metrics.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;

Status FromGrpc(const grpc::Status& status, const std::string& what) {
  return Status(coordinator::StatusCodeFromInt(status.error_code()),
                absl::StrCat(what, ": ", DescribeGrpcStatus(status)));
}

// The server's log probabilities of chunk[1..] (over the messages up to the first token's):
// entry k is chunk[k + 1]'s, given chunk[0..k].
StatusOr<std::vector<float>> ScoreChunk(v1::Inference::Stub& stub, const ClientSecurity& security,
                                        const std::vector<int32_t>& chunk) {
  v1::GenerateRequest request;
  request.mutable_prompt_tokens()->mutable_ids()->Add(chunk.begin(), chunk.end());
  request.set_prompt_logprobs(true);
  request.set_max_tokens(1);  // the prompt's last position is computed anyway
  request.mutable_sampling()->set_temperature(0);
  grpc::ClientContext context;
  AddApiKey(context, security);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse message;
  std::vector<float> logprobs;
  while (reader->Read(&message)) {
    for (const v1::TokenLogprobs& entry : message.prompt_logprobs()) {
      const size_t k = logprobs.size();
      if (k + 1 >= chunk.size() || entry.token_id() != chunk[k + 1]) {
        return absl::InternalError(absl::StrCat("the server scored token ", entry.token_id(), " at prompt position ",
                                                k + 1, ", which holds ", k + 1 < chunk.size() ? chunk[k + 1] : -1));
      }
      logprobs.push_back(entry.logprob());
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return FromGrpc(status, "Generate");
  if (logprobs.size() + 1 != chunk.size()) {
    return absl::InternalError(
        absl::StrCat("the server scored ", logprobs.size(), " prompt tokens of a chunk of ", chunk.size()));
  }
  return logprobs;
}

}  // namespace

std::vector<std::string_view> SplitForTokenize(std::string_view text, size_t max_bytes) {
  std::vector<std::string_view> pieces;
  while (text.size() > max_bytes) {
    // The last newline within the limit that a non-space byte follows.
    size_t cut = std::string_view::npos;
    for (size_t i = max_bytes; i-- > 0;) {
      const char next = text[i + 1];
      if (text[i] == '\n' && next != ' ' && next != '\n' && next != '\t' && next != '\r') {
        cut = i + 1;
        break;
      }
    }
    if (cut == std::string_view::npos) cut = max_bytes;  // no such newline: a hard cut
    pieces.push_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  pieces.push_back(text);
  return pieces;
}

Status RunServedEval(const ServedEvalOptions& options) {
  auto log = Logger("eval");
  if (options.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be at least 1");
  BF_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(options.text_file));
  BF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      OpenChannel(options.target, options.security, options.wait_ready_s));
  auto stub = v1::Inference::NewStub(channel);

  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    AddApiKey(context, options.security);
    const grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) return FromGrpc(status, absl::StrCat("GetModelInfo from ", options.target));
  }
  worker::PerplexityOptions perplexity = options.perplexity;
  perplexity.bos = info.has_bos_token_id() ? info.bos_token_id() : -1;
  // A chunk and the one token each call generates.
  if (static_cast<int64_t>(perplexity.ctx) + 1 > info.context_length()) {
    return absl::InvalidArgumentError(absl::StrCat("--ctx ", perplexity.ctx, " needs ", perplexity.ctx + 1,
                                                   " positions per sequence; the server's context holds ",
                                                   info.context_length()));
  }
  // One Tokenize call takes at most 1 MiB: a longer text (wikitext-2's test set is 1.3 MB) goes
  // in pieces, BOS (when the vocabulary adds one) put first by hand.
  const std::vector<std::string_view> pieces = SplitForTokenize(text, kTokenizePieceBytes);
  std::vector<int32_t> tokens;
  if (pieces.size() > 1) {
    log->info("tokenizing {} bytes in {} pieces", text.size(), pieces.size());
    if (info.has_bos_token_id()) tokens.push_back(info.bos_token_id());
  }
  for (size_t p = 0; p < pieces.size(); ++p) {
    grpc::ClientContext context;
    AddApiKey(context, options.security);
    v1::TokenizeRequest request;
    request.set_text(std::string(pieces[p]));
    request.set_add_special(pieces.size() == 1);
    v1::TokenizeResponse response;
    const grpc::Status status = stub->Tokenize(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, absl::StrCat("Tokenize of ", options.text_file, " (piece ", p, ")"));
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  BF_ASSIGN_OR_RETURN(const std::vector<std::vector<int32_t>> chunks, worker::PerplexityChunks(tokens, perplexity));
  log->info("{} ({}, TP {}): {} tokens, {} chunks of {}, scoring {} of each chunk, {} in flight", info.name(),
            options.target, info.tensor_parallel(), tokens.size(), chunks.size(), perplexity.ctx,
            perplexity.score_all ? "every prediction" : "the second half", options.concurrency);

  // Chunks in flight at once, so the server batches them.
  const Clock::time_point start = Clock::now();
  std::vector<std::vector<float>> scored(chunks.size());
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status failure;
  size_t done = 0;
  auto work = [&] {
    for (size_t c = next++; c < chunks.size(); c = next++) {
      StatusOr<std::vector<float>> logprobs = ScoreChunk(*stub, options.security, chunks[c]);
      std::lock_guard lock(mu);
      if (!logprobs.ok()) {
        if (failure.ok()) failure = Status(logprobs.status().code(), absl::StrCat("chunk ", c, ": ",
                                                                                    logprobs.status().message()));
        next = chunks.size();  // the others stop after their current chunk
        return;
      }
      scored[c] = *std::move(logprobs);
      log->info("chunk {}/{} scored", ++done, chunks.size());
    }
  };
  std::vector<std::thread> threads;
  const size_t n_threads = std::min<size_t>(static_cast<size_t>(options.concurrency), chunks.size());
  for (size_t t = 0; t < n_threads; ++t) threads.emplace_back(work);
  for (std::thread& t : threads) t.join();
  BF_RETURN_IF_ERROR(failure);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  worker::EvalAccumulator acc;
  for (const std::vector<float>& logprobs : scored) {
    // Prediction j (the logits after chunk[j]) scores chunk[j + 1]: entry j.
    for (int j = worker::FirstScored(perplexity); j < perplexity.ctx - 1; ++j) acc.AddLogprob(logprobs[j]);
  }
  const worker::EvalSummary s = acc.Summary();
  const nlohmann::json out = {
      {"target", options.target},
      {"model", info.name()},
      {"text", options.text_file},
      {"tp", info.tensor_parallel()},
      {"ctx", perplexity.ctx},
      {"chunks", chunks.size()},
      {"scored_tokens", s.tokens},
      {"scoring", perplexity.score_all ? "all" : "second_half"},
      {"perplexity", s.perplexity},
      {"nll_mean", s.nll_mean},
      {"seconds", seconds},
      {"prompt_tokens_per_s", seconds > 0 ? static_cast<double>(chunks.size()) * perplexity.ctx / seconds : 0.0},
  };
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace bitfleet::tools

// The OpenAI-compatible HTTP API (DESIGN.md §8), on its own port beside the gRPC API and in
// front of the same Scheduler:
//   POST /v1/completions, POST /v1/chat/completions   JSON, or server-sent events with "stream"
//   GET  /v1/models                                   the one served model
//   GET  /health                                      200 SERVING / 503 NOT_SERVING
// With API keys, every route but /health needs "Authorization: Bearer <key>" (401 without).
// Requests are translated into the gRPC API's GenerateRequest (openai_protocol.h) and checked by
// the same validation (api_request.h), then run as a GenerateCall. Refusals answer with the HTTP
// status of their code (openai_protocol.h, HttpStatusOf) and an OpenAI error object. A streamed
// response has committed to 200 before the model runs: an error after that arrives as an
// `error` event, then `data: [DONE]`. A request body needs a Content-Length and no
// Content-Encoding (411 / 415 otherwise, before it is read: cpp-httplib would not bound it).
// docs/protocol.md describes all of it.
//
// A client that disconnects cancels its request: a streaming one is seen at the sink (no longer
// writable), a non-streamed one at its connection's socket (http_connection.h), both within the
// call's cancel poll (20 ms).
//
// Threading: cpp-httplib runs each connection on a pool thread, which a completion blocks until
// it ends: `threads` bounds the completions in flight over HTTP (the scheduler's admission queue
// bounds them all). Thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "coordinator/api_auth.h"
#include "coordinator/api_request.h"
#include "coordinator/http_listener.h"
#include "coordinator/metrics.h"
#include "coordinator/tls.h"
#include "coordinator/scheduler.h"
#include "core/status.h"
#include "model/tokenizer/tokenizer.h"

namespace bitfleet::coordinator {

struct HttpApiOptions {
  ApiLimits limits;
  int threads = 64;           // connections served at once
  size_t max_body_bytes = size_t{4} << 20;  // larger bodies: 413
  // API keys (api_auth.h) for every route but /health; null: none, the anonymous tenant.
  std::shared_ptr<const ApiKeys> keys;
  TlsFiles tls;  // HTTPS when set (checked with CheckTlsFiles first)
};

class HttpApiServer {
 public:
  // Binds `host`:`port` (0: any free port) and starts serving. The tokenizer, scheduler and
  // metrics registry must outlive the server. UNAVAILABLE when it cannot bind.
  static StatusOr<std::unique_ptr<HttpApiServer>> Start(const std::string& host, int port, HttpApiOptions options,
                                                        const tokenizer::Tokenizer& tokenizer, Scheduler& scheduler,
                                                        MetricsRegistry& metrics, HealthFn serving);
  ~HttpApiServer();  // Stop()

  int port() const;
  // Stops listening and waits for the handlers: end the requests first (Scheduler::Stop).
  void Stop();

 private:
  struct Handlers;
  HttpApiServer() = default;

  std::unique_ptr<Handlers> handlers_;
  std::unique_ptr<HttpListener> listener_;
};

}  // namespace bitfleet::coordinator

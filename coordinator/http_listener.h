// A cpp-httplib server, its routes already set, bound to host:port and listening on its own
// thread until Stop. Shared by the coordinator's HTTP side ports (http_metrics.h, http_api.h).
//
// Request bodies are bounded before they are read: cpp-httplib 0.11 checks its payload limit
// against Content-Length only, and would read a chunked body, a body without a length (until the
// client closes) or a compressed one (inflated as it is read) into memory whole, before any
// handler or API key check. So a body must come with a Content-Length of at most
// `max_body_bytes` and without Content-Encoding: 411 / 413 / 415 otherwise, with an OpenAI-style
// error object, and the connection closed (the body was not read).
//
// Stop closes the listening socket and waits for the request threads, so a handler that is
// still running (a streamed completion) must be ended first.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/status.h"

namespace httplib {
class Server;
}

namespace bitfleet::coordinator {

// Answers GET /health with 200 "SERVING" or 503 "NOT_SERVING", as `serving` says.
using HealthFn = std::function<bool()>;
void RouteHealth(httplib::Server& server, HealthFn serving);

class HttpListener {
 public:
  // Binds `host`:`port` (0: any free port) and starts serving `server`; returns once it accepts
  // connections, so that Stop may follow at once. UNAVAILABLE, naming `what`, when it cannot bind.
  static StatusOr<std::unique_ptr<HttpListener>> Start(const std::string& what, const std::string& host, int port,
                                                       std::unique_ptr<httplib::Server> server,
                                                       size_t max_body_bytes);
  ~HttpListener();  // Stop()
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  int port() const { return port_; }
  void Stop();

 private:
  HttpListener() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};  // the accept loop ended (or never started)
  int port_ = 0;
};

}  // namespace bitfleet::coordinator

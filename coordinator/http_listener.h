// A cpp-httplib server, its routes already set, bound to host:port and listening on its own
// thread until Stop. Shared by the coordinator's HTTP side ports (http_metrics.h, http_api.h).
//
// Stop closes the listening socket and waits for the request threads, so a handler that is
// still running (a streamed completion) must be ended first.
#pragma once

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
  // Binds `host`:`port` (0: any free port) and starts serving `server`. UNAVAILABLE, naming
  // `what`, when it cannot bind.
  static StatusOr<std::unique_ptr<HttpListener>> Start(const std::string& what, const std::string& host, int port,
                                                       std::unique_ptr<httplib::Server> server);
  ~HttpListener();  // Stop()
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  int port() const { return port_; }
  void Stop();

 private:
  HttpListener() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace bitfleet::coordinator

// The coordinator's plain-HTTP side port (DESIGN.md §8): Prometheus text on GET /metrics and
// liveness on GET /health (200 "SERVING" / 503 "NOT_SERVING"). Nothing else is routed (debug and
// admin routes are off by default, §9). Served by cpp-httplib on its own threads.
//
// Thread-safety: the callbacks run on the server's threads and must be thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "coordinator/http_listener.h"
#include "core/status.h"

namespace bitfleet::coordinator {

class HttpMetricsServer {
 public:
  using TextFn = std::function<std::string()>;

  // Binds `host`:`port` (0: any free port) and starts serving. UNAVAILABLE when it cannot bind.
  static StatusOr<std::unique_ptr<HttpMetricsServer>> Start(const std::string& host, int port, TextFn metrics,
                                                            HealthFn serving);
  ~HttpMetricsServer();  // Stop()

  int port() const;
  void Stop();

 private:
  HttpMetricsServer() = default;

  std::unique_ptr<HttpListener> listener_;
};

}  // namespace bitfleet::coordinator

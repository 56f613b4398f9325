#include "coordinator/http_metrics.h"

#include <utility>

#include "core/logging.h"
#include "httplib.h"

namespace bitfleet::coordinator {

StatusOr<std::unique_ptr<HttpMetricsServer>> HttpMetricsServer::Start(const std::string& host, int port, TextFn metrics,
                                                                      HealthFn serving) {
  std::unique_ptr<HttpMetricsServer> self(new HttpMetricsServer());
  self->server_ = std::make_unique<httplib::Server>();
  httplib::Server& server = *self->server_;
  server.Get("/metrics", [metrics = std::move(metrics)](const httplib::Request&, httplib::Response& response) {
    response.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/health", [serving = std::move(serving)](const httplib::Request&, httplib::Response& response) {
    const bool ok = serving();
    response.status = ok ? 200 : 503;
    response.set_content(ok ? "SERVING\n" : "NOT_SERVING\n", "text/plain");
  });
  if (port == 0) {
    self->port_ = server.bind_to_any_port(host);
    if (self->port_ <= 0) return absl::UnavailableError(absl::StrCat("metrics: cannot bind ", host, ":0"));
  } else {
    if (!server.bind_to_port(host, port)) {
      return absl::UnavailableError(absl::StrCat("metrics: cannot bind ", host, ":", port));
    }
    self->port_ = port;
  }
  self->thread_ = std::thread([&server] { server.listen_after_bind(); });
  Logger("http")->info("metrics on http://{}:{}/metrics", host, self->port_);
  return self;
}

HttpMetricsServer::~HttpMetricsServer() { Stop(); }

void HttpMetricsServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace bitfleet::coordinator

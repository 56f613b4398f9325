#include "coordinator/http_metrics.h"

#include <utility>

#include "core/logging.h"
#include "httplib.h"

namespace bitfleet::coordinator {

StatusOr<std::unique_ptr<HttpMetricsServer>> HttpMetricsServer::Start(const std::string& host, int port, TextFn metrics,
                                                                      HealthFn serving) {
  std::unique_ptr<HttpMetricsServer> self(new HttpMetricsServer());
  auto server = std::make_unique<httplib::Server>();
  server->Get("/metrics", [metrics = std::move(metrics)](const httplib::Request&, httplib::Response& response) {
    response.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  RouteHealth(*server, std::move(serving));
  BF_ASSIGN_OR_RETURN(self->listener_, HttpListener::Start("metrics", host, port, std::move(server),
                                                          /*max_body_bytes=*/4096));
  Logger("http")->info("metrics on http://{}:{}/metrics", host, self->listener_->port());
  return self;
}

HttpMetricsServer::~HttpMetricsServer() { Stop(); }

int HttpMetricsServer::port() const { return listener_->port(); }

void HttpMetricsServer::Stop() {
  if (listener_ != nullptr) listener_->Stop();
}

}  // namespace bitfleet::coordinator

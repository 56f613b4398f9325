#include "coordinator/http_listener.h"

#include <utility>

#include "httplib.h"

namespace bitfleet::coordinator {

void RouteHealth(httplib::Server& server, HealthFn serving) {
  server.Get("/health", [serving = std::move(serving)](const httplib::Request&, httplib::Response& response) {
    const bool ok = serving();
    response.status = ok ? 200 : 503;
    response.set_content(ok ? "SERVING\n" : "NOT_SERVING\n", "text/plain");
  });
}

StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(const std::string& what, const std::string& host,
                                                            int port, std::unique_ptr<httplib::Server> server) {
  std::unique_ptr<HttpListener> self(new HttpListener());
  self->server_ = std::move(server);
  httplib::Server& bound = *self->server_;
  if (port == 0) {
    self->port_ = bound.bind_to_any_port(host);
    if (self->port_ <= 0) return absl::UnavailableError(absl::StrCat(what, ": cannot bind ", host, ":0"));
  } else {
    if (!bound.bind_to_port(host, port)) return absl::UnavailableError(absl::StrCat(what, ": cannot bind ", host, ":", port));
    self->port_ = port;
  }
  self->thread_ = std::thread([&bound] { bound.listen_after_bind(); });
  return self;
}

HttpListener::~HttpListener() { Stop(); }

void HttpListener::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace bitfleet::coordinator

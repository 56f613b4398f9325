#include "coordinator/http_listener.h"

#include <sys/socket.h>

#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "httplib.h"

namespace bitfleet::coordinator {
namespace {

// Connections the kernel completes before the accept loop takes them. cpp-httplib listens with 5:
// a burst of connects past that (agents opening their streams at once) waited for SYN retries,
// a second or more each. The kernel caps it at net.core.somaxconn (4096 on current Linux).
constexpr int kListenBacklog = 1024;

// Refuses, before the body is read, a request whose body has no bound (see the header comment).
// OpenAI's clients, curl and Prometheus send a Content-Length and no Content-Encoding.
httplib::Server::HandlerResponse RefuseUnboundedBodies(const httplib::Request& request,
                                                       httplib::Response& response) {
  // The methods whose body cpp-httplib reads (its detail::expect_content).
  const bool reads_body = request.method == "POST" || request.method == "PUT" || request.method == "PATCH" ||
                          request.method == "DELETE" || request.method == "PRI";
  const std::string encoding = absl::AsciiStrToLower(request.get_header_value("Content-Encoding"));
  int status = 0;
  const char* message = nullptr;
  if (request.has_header("Transfer-Encoding") || (reads_body && !request.has_header("Content-Length"))) {
    status = 411;
    message = "send the request body with a Content-Length (chunked bodies are not accepted)";
  } else if (!encoding.empty() && encoding != "identity") {
    status = 415;
    message = "a Content-Encoding is not accepted: send the body uncompressed";
  } else {
    return httplib::Server::HandlerResponse::Unhandled;
  }
  response.status = status;
  response.set_header("Connection", "close");
  response.set_content(absl::StrCat(R"({"error":{"code":"INVALID_ARGUMENT","message":")", message,
                                    R"(","param":null,"type":"invalid_request_error"}})"),
                       "application/json");
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

void RouteHealth(httplib::Server& server, HealthFn serving) {
  server.Get("/health", [serving = std::move(serving)](const httplib::Request&, httplib::Response& response) {
    const bool ok = serving();
    response.status = ok ? 200 : 503;
    response.set_content(ok ? "SERVING\n" : "NOT_SERVING\n", "text/plain");
  });
}

StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(const std::string& what, const std::string& host,
                                                            int port, std::unique_ptr<httplib::Server> server,
                                                            size_t max_body_bytes) {
  std::unique_ptr<HttpListener> self(new HttpListener());
  self->server_ = std::move(server);
  httplib::Server& bound = *self->server_;
  bound.set_payload_max_length(max_body_bytes);
  bound.set_pre_routing_handler(RefuseUnboundedBodies);
  // cpp-httplib's default options add SO_REUSEPORT, with which a second server binds a taken port
  // and silently takes a share of its connections: SO_REUSEADDR only (a restart can bind over
  // connections in TIME_WAIT), so a taken port fails the start. The socket is kept to raise the
  // backlog once bound.
  // (The server keeps the callback: it holds its own copy of where the socket goes.)
  auto listen_fd = std::make_shared<int>(-1);
  bound.set_socket_options([listen_fd](int sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listen_fd = sock;
  });
  if (port == 0) {
    self->port_ = bound.bind_to_any_port(host);
    if (self->port_ <= 0) return absl::UnavailableError(absl::StrCat(what, ": cannot bind ", host, ":0"));
  } else {
    if (!bound.bind_to_port(host, port)) return absl::UnavailableError(absl::StrCat(what, ": cannot bind ", host, ":", port));
    self->port_ = port;
  }
  // Listening again on a listening socket changes only its backlog.
  if (*listen_fd >= 0 && ::listen(*listen_fd, kListenBacklog) != 0) {
    return absl::UnavailableError(absl::StrCat(what, ": cannot listen on ", host, ":", self->port_));
  }
  HttpListener* raw = self.get();
  self->thread_ = std::thread([raw, &bound] {
    bound.listen_after_bind();
    raw->listen_returned_.store(true);
  });
  // cpp-httplib's stop() does nothing until the accept loop has started (is_running()), and the
  // loop then never ends: a Stop right after Start would wait forever. Return once it runs.
  while (!bound.is_running() && !self->listen_returned_.load()) std::this_thread::yield();
  return self;
}

HttpListener::~HttpListener() { Stop(); }

void HttpListener::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace bitfleet::coordinator

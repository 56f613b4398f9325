#include "coordinator/http_api.h"

#include <chrono>
#include <optional>
#include <utility>

#include "coordinator/chat_prompt.h"
#include "coordinator/generate_call.h"
#include "coordinator/http_connection.h"
#include "coordinator/openai_protocol.h"
#include "core/logging.h"
#include "httplib.h"
#include "model/tokenizer/utf8.h"

namespace bitfleet::coordinator {
namespace {

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void SendError(httplib::Response& response, const Status& status) {
  response.status = HttpStatusOf(status.code());
  response.set_content(OpenAiErrorBody(status), "application/json");
}

// The log probabilities of `message`'s tokens (their bytes from GenerateCall), appended to `out`.
void AppendLogprobs(const v1::GenerateResponse& message, std::vector<OpenAiTokenLogprobs>* out) {
  const int n = std::min(message.token_ids_size(), message.logprobs_size());
  for (int i = 0; i < n; ++i) {
    const v1::TokenLogprobs& in = message.logprobs(i);
    OpenAiTokenLogprobs entry{message.token_ids(i), tokenizer::SanitizeUtf8(in.token()), in.token(), in.logprob(), {}};
    for (const v1::TopLogprob& top : in.top()) {
      entry.top.push_back({top.token_id(), tokenizer::SanitizeUtf8(top.token()), top.token(), top.logprob()});
    }
    out->push_back(std::move(entry));
  }
}

// A completion streamed as server-sent events (`data: <chunk>`), one chunk per message. With
// logprobs, a chunk carries those of the tokens since the previous chunk.
class SseOutput final : public GenerateOutput {
 public:
  SseOutput(httplib::DataSink& sink, const OpenAiResponseHeader& header, bool logprobs)
      : sink_(sink), header_(header), logprobs_(logprobs) {}

  bool Write(const v1::GenerateResponse& message) override {
    const bool last = message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
    if (logprobs_) AppendLogprobs(message, &pending_);
    // Token ids without complete text yet (a character split over tokens) make no chunk.
    if (message.text().empty() && !last && !first_) return true;
    const std::string chunk = OpenAiChunkBody(header_, message.text(), message.finish_reason(), first_,
                                              logprobs_ ? &pending_ : nullptr, text_offset_);
    text_offset_ += OpenAiLogprobsLength(pending_);
    pending_.clear();
    if (!Event(chunk)) return false;
    first_ = false;
    if (last && header_.include_usage && !Event(OpenAiUsageChunkBody(header_, message.usage()))) return false;
    return true;
  }
  bool ClientGone() override { return gone_ || !sink_.is_writable(); }

  // Ends the stream: an error event for a failed call, then the terminator.
  void Finish(const Status& status) {
    if (!status.ok()) Event(OpenAiErrorBody(status));
    Send("data: [DONE]\n\n");
    sink_.done();
  }

 private:
  bool Event(const std::string& json) { return Send(absl::StrCat("data: ", json, "\n\n")); }
  bool Send(const std::string& bytes) {
    if (gone_) return false;
    gone_ = !sink_.write(bytes.data(), bytes.size());
    return !gone_;
  }

  httplib::DataSink& sink_;
  const OpenAiResponseHeader& header_;
  const bool logprobs_;
  std::vector<OpenAiTokenLogprobs> pending_;  // of tokens not in a chunk yet
  int64_t text_offset_ = 0;                   // characters of the tokens already sent
  bool first_ = true;
  bool gone_ = false;
};

// A completion gathered for one JSON response; the client counts as gone once its connection
// closes (a client timeout), so that the request stops taking steps for nobody.
class BufferOutput final : public GenerateOutput {
 public:
  explicit BufferOutput(const HttpConnection& connection) : connection_(connection) {}

  bool Write(const v1::GenerateResponse& message) override {
    text += message.text();
    AppendLogprobs(message, &logprobs);
    if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      finish = message.finish_reason();
      usage = message.usage();
    }
    return true;
  }
  bool ClientGone() override { return connection_.PeerGone(); }

  std::string text;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  std::vector<OpenAiTokenLogprobs> logprobs;

 private:
  const HttpConnection& connection_;
};

}  // namespace

struct HttpApiServer::Handlers {
  HttpApiOptions options;
  const tokenizer::Tokenizer& tokenizer;
  Scheduler& scheduler;
  MetricsRegistry& metrics;
  std::unique_ptr<ChatPrompt> chat;
  int64_t started = UnixSeconds();
  RequestIds request_ids{};

  // The caller's tenant (AuthorizeCall); answers 401 itself when the key is missing or unknown.
  std::optional<Tenant> Authorize(const httplib::Request& request, httplib::Response& response) {
    StatusOr<Tenant> tenant = AuthorizeCall(options.keys.get(), request.get_header_value("Authorization"),
                                            request.remote_addr, "http", metrics);
    if (tenant.ok()) return *std::move(tenant);
    SendError(response, tenant.status());
    response.set_header("WWW-Authenticate", "Bearer");
    return std::nullopt;
  }

  void Count(OpenAiEndpoint endpoint, int http_status) {
    metrics
        .AddCounter("bitfleet_api_http_completions_total", "OpenAI-compatible completions by endpoint and HTTP status",
                    {{"endpoint", endpoint == OpenAiEndpoint::kChatCompletions ? "chat" : "completions"},
                     {"status", absl::StrCat(http_status)}})
        ->Increment();
  }

  void Complete(OpenAiEndpoint endpoint, const httplib::Request& http_request, httplib::Response& response) {
    const Clock::time_point received = Clock::now();
    auto log = Logger("http");
    const std::optional<Tenant> tenant = Authorize(http_request, response);
    if (!tenant) return Count(endpoint, response.status);
    const auto refuse = [&](const Status& status) {
      log->debug("rejected {} from {}: {}", http_request.path, http_request.remote_addr, status.ToString());
      SendError(response, status);
      Count(endpoint, response.status);
    };
    StatusOr<OpenAiRequest> request = ParseOpenAiRequest(endpoint, http_request.body);
    if (!request.ok()) return refuse(request.status());
    StatusOr<ParsedGenerate> parsed =
        ParseGenerateRequest(request->generate, options.limits, tokenizer, chat.get(), RandomSeed());
    if (!parsed.ok()) return refuse(parsed.status());

    OpenAiResponseHeader header;
    header.endpoint = endpoint;
    header.id = request_ids.Next(endpoint == OpenAiEndpoint::kChatCompletions ? "chatcmpl" : "cmpl");
    header.model = options.limits.model_name;
    header.created = UnixSeconds();
    header.include_usage = request->include_usage;
    const bool wants_logprobs = request->generate.logprobs();
    GenerateRequest& submitted = parsed->request;
    submitted.request_id = header.id;
    GenerateCallOptions call_options;
    call_options.received = received;
    call_options.parsed = Clock::now();
    StatusOr<std::unique_ptr<GenerateCall>> call =
        GenerateCall::Submit(scheduler, tokenizer, *std::move(parsed), *tenant, call_options);
    if (!call.ok()) return refuse(call.status());

    if (!request->stream) {
      (*call)->MarkHeadersSent();
      const HttpConnection connection = HttpConnection::Find(http_request.local_addr, http_request.local_port,
                                                             http_request.remote_addr, http_request.remote_port);
      if (!connection.known()) {
        log->debug("{}: connection from {}:{} not found; the request runs to its end if the client leaves", header.id,
                   http_request.remote_addr, http_request.remote_port);
      }
      BufferOutput output(connection);
      const Status status = (*call)->Run(output);
      if (!status.ok()) return refuse(status);
      response.set_content(OpenAiCompletionBody(header, output.text, output.finish, output.usage,
                                                wants_logprobs ? &output.logprobs : nullptr),
                           "application/json");
      Count(endpoint, 200);
      return;
    }
    // The provider runs after this handler returns, once the headers are out. cpp-httplib
    // copies it, so the call is shared; a provider that never runs (the client left) drops the
    // last reference, and the call cancels its request.
    std::shared_ptr<GenerateCall> shared = *std::move(call);
    response.set_header("Cache-Control", "no-cache");
    response.set_chunked_content_provider(
        "text/event-stream", [this, shared, header, endpoint, wants_logprobs](size_t, httplib::DataSink& sink) {
          shared->MarkHeadersSent();
          SseOutput output(sink, header, wants_logprobs);
          const Status status = shared->Run(output);
          output.Finish(status);
          Count(endpoint, status.ok() ? 200 : HttpStatusOf(status.code()));
          return true;
        });
  }
};

StatusOr<std::unique_ptr<HttpApiServer>> HttpApiServer::Start(const std::string& host, int port,
                                                              HttpApiOptions options,
                                                              const tokenizer::Tokenizer& tokenizer,
                                                              Scheduler& scheduler, MetricsRegistry& metrics,
                                                              HealthFn serving) {
  if (options.threads < 1) return absl::InvalidArgumentError("the HTTP API needs at least one thread");
  std::unique_ptr<HttpApiServer> self(new HttpApiServer());
  std::unique_ptr<ChatPrompt> chat = ChatPrompt::FromTemplate(options.chat_template);
  self->handlers_.reset(new Handlers{std::move(options), tokenizer, scheduler, metrics, std::move(chat)});
  Handlers* handlers = self->handlers_.get();

  std::unique_ptr<httplib::Server> server;
  const TlsFiles& tls = handlers->options.tls;
  if (tls.enabled()) {
    BF_RETURN_IF_ERROR(CheckTlsFiles(tls));
    auto https = std::make_unique<httplib::SSLServer>(
        tls.cert_file.c_str(), tls.key_file.c_str(), tls.client_ca_file.empty() ? nullptr : tls.client_ca_file.c_str());
    if (!https->is_valid()) return absl::InvalidArgumentError("the HTTP API could not load its TLS files");
    server = std::move(https);
  } else {
    server = std::make_unique<httplib::Server>();
  }
  const int threads = handlers->options.threads;
  server->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server->Post("/v1/completions", [handlers](const httplib::Request& request, httplib::Response& response) {
    handlers->Complete(OpenAiEndpoint::kCompletions, request, response);
  });
  server->Post("/v1/chat/completions", [handlers](const httplib::Request& request, httplib::Response& response) {
    handlers->Complete(OpenAiEndpoint::kChatCompletions, request, response);
  });
  server->Get("/v1/models", [handlers](const httplib::Request& request, httplib::Response& response) {
    if (!handlers->Authorize(request, response)) return;
    response.set_content(OpenAiModelsBody(handlers->options.limits.model_name, handlers->started,
                                          handlers->options.limits.max_context),
                         "application/json");
  });
  RouteHealth(*server, std::move(serving));
  // Anything else, and handler exceptions (none are thrown here; a library one would be a bug):
  // an OpenAI error object rather than cpp-httplib's empty page.
  const size_t max_body_bytes = handlers->options.max_body_bytes;
  server->set_error_handler([max_body_bytes](const httplib::Request& request, httplib::Response& response) {
    if (!response.body.empty()) return;
    Status status = absl::InvalidArgumentError(absl::StrCat("HTTP ", response.status, " for ", request.path));
    if (response.status == 404) {
      status = absl::NotFoundError(absl::StrCat("no route for ", request.method, " ", request.path));
    } else if (response.status == 413) {
      // cpp-httplib also caps form-encoded bodies (curl -d without a Content-Type) at 8 KiB.
      status = absl::InvalidArgumentError(absl::StrCat("the request body is too large (JSON bodies: at most ",
                                                       max_body_bytes, " bytes, with Content-Type: application/json)"));
    }
    response.set_content(OpenAiErrorBody(status), "application/json");
  });
  BF_ASSIGN_OR_RETURN(self->listener_, HttpListener::Start("HTTP API", host, port, std::move(server),
                                                          max_body_bytes));
  Logger("http")->info("OpenAI-compatible API on {}://{}:{}/v1{}", tls.enabled() ? "https" : "http", host,
                       self->listener_->port(), tls.client_ca_file.empty() ? "" : " (client certificates required)");
  return self;
}

HttpApiServer::~HttpApiServer() { Stop(); }

int HttpApiServer::port() const { return listener_->port(); }

void HttpApiServer::Stop() {
  if (listener_ != nullptr) listener_->Stop();
}

}  // namespace bitfleet::coordinator

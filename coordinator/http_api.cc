#include "coordinator/http_api.h"

#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "coordinator/api_request.h"
#include "coordinator/chat_prompt.h"
#include "coordinator/generate_call.h"
#include "coordinator/http_connection.h"
#include "coordinator/openai_protocol.h"
#include "coordinator/tls_reload.h"
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

OpenAiTokenLogprobs ToOpenAi(const v1::TokenLogprobs& in) {
  OpenAiTokenLogprobs entry{in.token_id(), tokenizer::SanitizeUtf8(in.token()), in.token(), in.logprob(), {}};
  for (const v1::TopLogprob& top : in.top()) {
    entry.top.push_back({top.token_id(), tokenizer::SanitizeUtf8(top.token()), top.token(), top.logprob()});
  }
  return entry;
}

// The log probabilities of `message`'s tokens (their bytes from GenerateCall), appended to `out`.
void AppendLogprobs(const v1::GenerateResponse& message, std::vector<OpenAiTokenLogprobs>* out) {
  const int n = std::min(message.token_ids_size(), message.logprobs_size());
  for (int i = 0; i < n; ++i) out->push_back(ToOpenAi(message.logprobs(i)));
}

// What "echo" puts before a choice's completion: its prompt's text and, with log probabilities,
// an entry per prompt token (the first one, unscored, kept here; the others come in the
// messages up to the first token's).
struct Echo {
  std::string text;
  OpenAiTokenLogprobs first;
};

// How one choice's messages become its text and log probabilities (shared by the streamed and
// the whole response).
class ChoiceText {
 public:
  ChoiceText(const Echo* echo, bool prompt_only) : echo_(echo), prompt_only_(prompt_only) {}

  // Appends `message`'s share to `text` and `logprobs`.
  void Add(const v1::GenerateResponse& message, std::string* text, std::vector<OpenAiTokenLogprobs>* logprobs) {
    if (echo_ != nullptr && first_) {
      *text += echo_->text;
      logprobs->push_back(echo_->first);
    }
    first_ = false;
    // The prompt's scores (echo with logprobs), over the messages up to the first token's.
    for (const v1::TokenLogprobs& entry : message.prompt_logprobs()) logprobs->push_back(ToOpenAi(entry));
    if (prompt_only_) return;  // the one token the request ran for is not part of the answer
    *text += message.text();
    AppendLogprobs(message, logprobs);
  }
  // The finish reason and usage of the last message, as the answer reports them.
  v1::FinishReason Finish(const v1::GenerateResponse& last, v1::Usage* usage) const {
    *usage = last.usage();
    if (!prompt_only_) return last.finish_reason();
    usage->set_completion_tokens(0);
    return v1::FINISH_REASON_LENGTH;
  }

 private:
  const Echo* const echo_;
  const bool prompt_only_;
  bool first_ = true;
};

// Server-sent events (`data: <json>`) on one response's sink, shared by its choices, whose
// threads write whole events in turn.
class SseStream {
 public:
  explicit SseStream(httplib::DataSink& sink) : sink_(sink) {}

  bool Event(const std::string& json) {
    std::lock_guard lock(mu_);
    return Send(absl::StrCat("data: ", json, "\n\n"));
  }
  bool gone() {
    std::lock_guard lock(mu_);
    return gone_ || !sink_.is_writable();
  }
  // Ends the stream: an error event for a failed call, then the terminator.
  void Finish(const Status& status) {
    if (!status.ok()) Event(OpenAiErrorBody(status));
    std::lock_guard lock(mu_);
    Send("data: [DONE]\n\n");
    sink_.done();
  }

 private:
  bool Send(const std::string& bytes) {
    if (gone_) return false;
    gone_ = !sink_.write(bytes.data(), bytes.size());
    return !gone_;
  }

  std::mutex mu_;
  httplib::DataSink& sink_;
  bool gone_ = false;
};

// One choice of a streamed completion, one chunk per message. With logprobs, a chunk carries
// those of the tokens since the previous chunk.
class SseOutput final : public GenerateOutput {
 public:
  SseOutput(SseStream& stream, const OpenAiResponseHeader& header, bool logprobs, int index, ChoiceText choice)
      : stream_(stream), header_(header), logprobs_(logprobs), index_(index), choice_(choice) {}

  bool Write(const v1::GenerateResponse& message) override {
    const bool last = message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
    std::string text;
    choice_.Add(message, &text, &pending_);
    if (!logprobs_) pending_.clear();
    const v1::FinishReason finish = last ? choice_.Finish(message, &usage) : v1::FINISH_REASON_UNSPECIFIED;
    if (header_.tools != nullptr && !text_answer_) {
      // Under tool_choice auto an answer that does not begin like a call is text: what was held
      // goes out, and the rest streams.
      call_text_ += text;
      const size_t first = call_text_.find_first_not_of(" \t\n\r");
      text_answer_ = header_.tools->automatic && first != std::string::npos &&
                     !BeginsToolCall(*header_.tools, call_text_[first]);
      if (!text_answer_) return StreamCall(finish, last);
      text = std::move(call_text_);
    }
    // Token ids without complete text yet (a character split over tokens) make no chunk.
    if (text.empty() && !last && !first_) return true;
    const std::string chunk =
        OpenAiChunkBody(header_, text, finish, first_, logprobs_ ? &pending_ : nullptr, text_offset_, index_);
    text_offset_ += OpenAiLogprobsLength(pending_);
    pending_.clear();
    first_ = false;
    return stream_.Event(chunk);
  }
  bool ClientGone() override { return stream_.gone(); }

  v1::Usage usage;  // from the last message

 private:
  // Tool calls stream as OpenAI's do: a chunk opens each once its name is known, then its
  // arguments' text follows as it grows; a last chunk carries the finish reason. An answer that
  // ends before a call began (cut short) goes out whole at the end, as content when it is not
  // a call.
  bool StreamCall(v1::FinishReason finish, bool last) {
    if (!calls_) calls_.emplace(*header_.tools);
    const std::vector<ToolCallStream::Delta> deltas = calls_->Update(call_text_, last);
    if (!calls_->opened()) return !last || stream_.Event(OpenAiToolCallChunkBody(header_, call_text_, finish, index_));
    for (const ToolCallStream::Delta& d : deltas) {
      const std::string chunk =
          d.opens ? OpenAiToolCallHeadChunkBody(header_, d.name, index_, d.call)
                  : OpenAiToolCallArgumentsChunkBody(header_, d.arguments, v1::FINISH_REASON_UNSPECIFIED, false,
                                                     index_, d.call);
      if (!stream_.Event(chunk)) return false;
    }
    if (!last) return true;
    const bool complete =
        finish == v1::FINISH_REASON_END_OF_SEQUENCE && ParseToolCalls(*header_.tools, call_text_).has_value();
    return stream_.Event(OpenAiToolCallArgumentsChunkBody(header_, "", finish, complete, index_, 0));
  }

  SseStream& stream_;
  const OpenAiResponseHeader& header_;
  const bool logprobs_;
  const int index_;
  ChoiceText choice_;
  std::vector<OpenAiTokenLogprobs> pending_;  // of tokens not in a chunk yet
  std::string call_text_;                     // a tool call's answer so far
  bool text_answer_ = false;                  // tool_choice auto, answered in text
  std::optional<ToolCallStream> calls_;       // the answer's calls, once it is one
  int64_t text_offset_ = 0;                   // characters of the tokens already sent
  bool first_ = true;
};

// A completion gathered for one JSON response; the client counts as gone once its connection
// closes (a client timeout), so that the request stops taking steps for nobody.
class BufferOutput final : public GenerateOutput {
 public:
  BufferOutput(const HttpConnection& connection, ChoiceText choice) : connection_(connection), choice_(choice) {}

  bool Write(const v1::GenerateResponse& message) override {
    choice_.Add(message, &text, &logprobs);
    if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = choice_.Finish(message, &usage);
    return true;
  }
  bool ClientGone() override { return connection_.PeerGone(); }

  std::string text;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  std::vector<OpenAiTokenLogprobs> logprobs;

 private:
  const HttpConnection& connection_;
  ChoiceText choice_;
};

// The usage of a request's choices (`n` per prompt, in prompt order): each prompt's tokens
// counted once (its first choice's), completion tokens of every choice.
v1::Usage SumUsage(const std::vector<v1::Usage>& usages, int n) {
  v1::Usage sum;
  for (size_t i = 0; i < usages.size(); ++i) {
    if (i % static_cast<size_t>(n) == 0) {
      sum.set_prompt_tokens(sum.prompt_tokens() + usages[i].prompt_tokens());
      sum.set_cached_prompt_tokens(sum.cached_prompt_tokens() + usages[i].cached_prompt_tokens());
    }
    sum.set_completion_tokens(sum.completion_tokens() + usages[i].completion_tokens());
  }
  if (!usages.empty()) sum.set_seed(usages.front().seed());
  return sum;
}

}  // namespace

struct HttpApiServer::Handlers {
  HttpApiOptions options;
  const tokenizer::Tokenizer& tokenizer;
  Scheduler& scheduler;
  MetricsRegistry& metrics;
  int64_t started = UnixSeconds();
  std::shared_ptr<TlsReloader> tls = nullptr;  // with TLS: the certificates handshakes get
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

  // The echo of a choice whose prompt is `prompt` (the request's text or ids) and encodes to `ids`.
  StatusOr<Echo> MakeEcho(const v1::GenerateRequest& prompt, const std::vector<int32_t>& ids) const {
    Echo echo;
    if (prompt.input_case() == v1::GenerateRequest::kPrompt) {
      echo.text = prompt.prompt();
    } else {
      BF_ASSIGN_OR_RETURN(echo.text, DetokenizeIds(tokenizer, ids));
    }
    const std::string piece = TokenBytes(tokenizer, ids.front());
    echo.first = OpenAiTokenLogprobs{ids.front(), tokenizer::SanitizeUtf8(piece), piece, 0.0f, {}, /*scored=*/false};
    return echo;
  }

  // POST /tokenize's ids: a prompt as Tokenize encodes it, or a chat as completions render it.
  StatusOr<std::vector<int32_t>> Tokenize(const std::string& body) const {
    BF_ASSIGN_OR_RETURN(OpenAiTokenizeRequest request, ParseOpenAiTokenize(body));
    if (request.prompt) return TokenizeText(tokenizer, options.limits, *request.prompt, request.add_special);
    if (options.limits.chat == nullptr) return absl::FailedPreconditionError(options.limits.chat_unavailable);
    return options.limits.chat->Encode(*request.chat, tokenizer, options.limits.max_prompt_bytes);
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

    OpenAiResponseHeader header;
    header.endpoint = endpoint;
    header.id = request_ids.Next(endpoint == OpenAiEndpoint::kChatCompletions ? "chatcmpl" : "cmpl");
    header.model = options.limits.model_name;
    header.created = UnixSeconds();
    header.include_usage = request->include_usage;
    if (request->tools) header.tools = std::make_shared<const OpenAiTools>(*request->tools);
    const bool wants_logprobs = request->generate().logprobs() || request->generate().prompt_logprobs();
    const bool prompt_only = request->prompt_only;
    const auto choice_text = [prompt_only](const std::vector<Echo>& echoes, size_t i) {
      return ChoiceText(echoes.empty() ? nullptr : &echoes[i], prompt_only);
    };
    // Every choice is validated and admitted before any runs: a refusal of one (a bad prompt of
    // a batch, a full queue) refuses the request, and the calls already admitted are destroyed,
    // which cancels them.
    std::vector<std::shared_ptr<GenerateCall>> calls;
    std::vector<Echo> echoes;  // per choice, with "echo"
    const size_t n_choices = request->choices.size();
    for (size_t i = 0; i < n_choices; ++i) {
      StatusOr<ParsedGenerate> parsed =
          ParseGenerateRequest(request->choices[i], options.limits, tokenizer, options.limits.chat.get(), RandomSeed());
      if (!parsed.ok()) {
        return refuse(n_choices == 1 ? parsed.status()
                                     : Status(parsed.status().code(), absl::StrCat("choice ", i, ": ",
                                                                                   parsed.status().message())));
      }
      parsed->request.request_id = n_choices == 1 ? header.id : absl::StrCat(header.id, "/", i);
      if (request->echo) {
        StatusOr<Echo> echo = MakeEcho(request->choices[i], parsed->request.prompt);
        if (!echo.ok()) return refuse(echo.status());
        echoes.push_back(*std::move(echo));
      }
      GenerateCallOptions call_options;
      call_options.received = received;
      call_options.parsed = Clock::now();
      StatusOr<std::unique_ptr<GenerateCall>> call =
          GenerateCall::Submit(scheduler, tokenizer, *std::move(parsed), *tenant, call_options);
      if (!call.ok()) return refuse(call.status());
      calls.push_back(*std::move(call));
    }

    if (!request->stream) {
      const HttpConnection connection = HttpConnection::Find(http_request.local_addr, http_request.local_port,
                                                             http_request.remote_addr, http_request.remote_port);
      if (!connection.known()) {
        log->debug("{}: connection from {}:{} not found; the request runs to its end if the client leaves", header.id,
                   http_request.remote_addr, http_request.remote_port);
      }
      // The choices run together in the scheduler; their events wait in their calls' queues
      // while the earlier ones are read here.
      std::vector<BufferOutput> outputs;
      outputs.reserve(n_choices);
      for (size_t i = 0; i < calls.size(); ++i) {
        calls[i]->MarkHeadersSent();
        const Status status = calls[i]->Run(outputs.emplace_back(connection, choice_text(echoes, i)));
        if (!status.ok()) return refuse(status);
      }
      std::vector<OpenAiChoice> choices;
      std::vector<v1::Usage> usages;
      for (const BufferOutput& out : outputs) {
        choices.push_back({out.text, out.finish, wants_logprobs ? &out.logprobs : nullptr});
        usages.push_back(out.usage);
      }
      response.set_content(OpenAiCompletionBody(header, choices, SumUsage(usages, request->n)), "application/json");
      Count(endpoint, 200);
      return;
    }
    // The provider runs after this handler returns, once the headers are out. cpp-httplib
    // copies it, so the calls are shared; a provider that never runs (the client left) drops
    // the last references, and the calls cancel their requests. The choices stream together,
    // each on a thread of its own (the first on this one), their chunks interleaved as their
    // tokens come and carrying their index.
    response.set_header("Cache-Control", "no-cache");
    response.set_chunked_content_provider(
        "text/event-stream",
        [this, calls, echoes, choice_text, header, endpoint, wants_logprobs, n = request->n](size_t,
                                                                                             httplib::DataSink& sink) {
          SseStream stream(sink);
          std::vector<Status> statuses(calls.size());
          std::vector<v1::Usage> usages(calls.size());
          const auto run = [&](size_t i) {
            calls[i]->MarkHeadersSent();
            SseOutput output(stream, header, wants_logprobs, static_cast<int>(i), choice_text(echoes, i));
            statuses[i] = calls[i]->Run(output);
            usages[i] = output.usage;
          };
          std::vector<std::thread> others;
          for (size_t i = 1; i < calls.size(); ++i) others.emplace_back(run, i);
          run(0);
          for (std::thread& t : others) t.join();
          Status status = absl::OkStatus();
          for (const Status& s : statuses) {
            if (status.ok()) status = s;
          }
          if (status.ok() && header.include_usage) stream.Event(OpenAiUsageChunkBody(header, SumUsage(usages, n)));
          stream.Finish(status);
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
  self->handlers_.reset(new Handlers{std::move(options), tokenizer, scheduler, metrics});
  Handlers* handlers = self->handlers_.get();

  std::unique_ptr<httplib::Server> server;
  const TlsFiles& tls = handlers->options.tls;
  if (tls.enabled()) {
    BF_ASSIGN_OR_RETURN(handlers->tls, TlsReloader::Create(tls));
    TlsReloader* reloader = handlers->tls.get();
    auto https = std::make_unique<httplib::SSLServer>([reloader](SSL_CTX& ctx) { return reloader->SetUp(ctx); });
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
  // vLLM's token-counting extensions, for clients that fit prompts to the context.
  server->Post("/tokenize", [handlers](const httplib::Request& request, httplib::Response& response) {
    if (!handlers->Authorize(request, response)) return;
    StatusOr<std::vector<int32_t>> ids = handlers->Tokenize(request.body);
    if (!ids.ok()) return SendError(response, ids.status());
    response.set_content(OpenAiTokenizeBody(*ids, handlers->options.limits.max_context), "application/json");
  });
  server->Post("/detokenize", [handlers](const httplib::Request& request, httplib::Response& response) {
    if (!handlers->Authorize(request, response)) return;
    StatusOr<std::vector<int32_t>> ids = ParseOpenAiDetokenize(request.body);
    StatusOr<std::string> text = ids.ok() ? DetokenizeIds(handlers->tokenizer, *ids) : ids.status();
    if (!text.ok()) return SendError(response, text.status());
    response.set_content(OpenAiDetokenizeBody(*text), "application/json");
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
  Logger("http")->info("OpenAI-compatible API on {}://{}:{}/v1{}, {} threads", tls.enabled() ? "https" : "http",
                       host, self->listener_->port(),
                       tls.client_ca_file.empty() ? "" : " (client certificates required)", threads);
  return self;
}

HttpApiServer::~HttpApiServer() { Stop(); }

int HttpApiServer::port() const { return listener_->port(); }

void HttpApiServer::Stop() {
  if (listener_ != nullptr) listener_->Stop();
}

}  // namespace bitfleet::coordinator

#include "agent/http_server.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "agent/logging.h"
#include "agent/metrics.h"
#include "agent/version.h"

namespace qcs::agent {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

Result<std::pair<std::string, uint16_t>> splitListenAddress(const std::string& listen) {
  std::string host;
  std::string port;
  if (!listen.empty() && listen.front() == '[') {
    auto close = listen.find("]:");
    if (close == std::string::npos) {
      return makeError(ErrorCode::kInvalidArgument, "http.listen " + listen + ": expected [v6]:port");
    }
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return makeError(ErrorCode::kInvalidArgument, "http.listen " + listen + ": expected host:port");
    }
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return makeError(ErrorCode::kInvalidArgument, "http.listen " + listen + ": expected host:port");
  }
  return std::make_pair(host, static_cast<uint16_t>(value));
}

struct HttpServer::Impl {
  // Declared before ioc: sessions still pending when ioc is destroyed use routes and connections.
  HttpServerOptions options;
  HttpRoutes routes;
  std::atomic<size_t> connections{0};
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::thread thread;

  void accept();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl& server) : stream_(std::move(socket)), server_(server) {
    ++server_.connections;
  }
  ~Session() { --server_.connections; }

  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.headerLimit));
    parser_->body_limit(server_.options.headerLimit);
    stream_.expires_after(served_ == 0 ? server_.options.readTimeout : server_.options.idleTimeout);
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::onRead, shared_from_this()));
  }

  void onRead(beast::error_code ec, size_t) {
    if (ec) {
      // Malformed or oversized requests get an answer; a peer that went away or timed out does not.
      if (ec == http::error::header_limit) return reply(431, "request header fields too large\n", false, 11, true);
      if (ec == http::error::body_limit) return reply(413, "request body too large\n", false, 11, true);
      if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message) {
        return reply(400, "bad request\n", false, 11, true);
      }
      return close();
    }
    const auto& request = parser_->get();
    std::string_view target(request.target().data(), request.target().size());
    target = target.substr(0, target.find('?'));
    const bool head = request.method() == http::verb::head;
    const unsigned version = request.version();
    const bool closeAfter = !request.keep_alive();
    ++served_;

    auto route = server_.routes.find(std::string(target));
    if (route == server_.routes.end()) return reply(404, "not found\n", head, version, closeAfter);
    if (request.method() != http::verb::get && !head) {
      return reply(405, "method not allowed (GET or HEAD)\n", false, version, closeAfter, "GET, HEAD");
    }
    HttpReply answer;
    try {
      answer = route->second();
    } catch (const std::exception& e) {
      spdlog::error("http: {} failed: {}", target, e.what());
      answer = HttpReply{500, "text/plain; charset=utf-8", "internal error\n"};
    }
    send(answer.status, answer.contentType, std::move(answer.body), head, version, closeAfter, "");
  }

  void reply(int status, std::string body, bool head, unsigned version, bool closeAfter, std::string allow = "") {
    send(status, "text/plain; charset=utf-8", std::move(body), head, version, closeAfter, std::move(allow));
  }

  void send(int status, const std::string& contentType, std::string body, bool head, unsigned version, bool closeAfter,
            std::string allow) {
    auto response = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), version);
    response->set(http::field::server, "qcs-agent");
    response->set(http::field::content_type, contentType);
    response->set(http::field::cache_control, "no-store");
    if (!allow.empty()) response->set(http::field::allow, allow);
    response->keep_alive(!closeAfter);
    response->body() = std::move(body);
    response->prepare_payload();
    if (head) response->body().clear();  // Content-Length still says what GET would send
    stream_.expires_after(server_.options.readTimeout);
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response, closeAfter](beast::error_code ec, size_t) {
                        if (ec || closeAfter) return self->close();
                        self->read();
                      });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  HttpServer::Impl& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  int served_ = 0;
};

std::string formatAddress(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  const std::string port = std::to_string(endpoint.port());
  return address.is_v6() ? "[" + address.to_string() + "]:" + port : address.to_string() + ":" + port;
}

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;
    if (!ec) {
      if (connections.load() >= options.maxConnections) {
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        std::make_shared<Session>(std::move(socket), *this)->start();
      }
    }
    accept();
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  net::post(impl_->ioc, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  impl_->ioc.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerOptions& options, HttpRoutes routes) {
  auto hostPort = splitListenAddress(options.listen);
  if (!hostPort) return hostPort.error();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->routes = std::move(routes);

  const std::string where = "http.listen " + options.listen;
  beast::error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto endpoints = resolver.resolve(hostPort->first, std::to_string(hostPort->second),
                                    tcp::resolver::numeric_service | tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) {
    return makeError(ErrorCode::kInvalidArgument,
                     where + ": cannot resolve " + hostPort->first + " (" + ec.message() + ")");
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto& acceptor = impl->acceptor;
  if (acceptor.open(endpoint.protocol(), ec); !ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    std::string hint = ec == net::error::address_in_use
                           ? "; another process (perhaps another qcs-agent) listens there: stop it or set "
                             "http.listen to a free port"
                       : ec == net::error::access_denied ? "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
                                                         : "";
    return makeError(ErrorCode::kUnavailable,
                     where + ": cannot listen on " + formatAddress(endpoint) + " (" + ec.message() + ")" + hint);
  }
  impl->accept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    for (;;) {
      try {
        raw->ioc.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("http: server thread: {}", e.what());
      }
    }
  });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::boundPort() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

std::string HttpServer::boundAddress() const {
  beast::error_code ec;
  return formatAddress(impl_->acceptor.local_endpoint(ec));
}

Result<HttpReply> httpGet(const std::string& listen, const std::string& target, std::chrono::milliseconds timeout) {
  auto hostPort = splitListenAddress(listen);
  if (!hostPort) return hostPort.error();
  std::string host = hostPort->first;
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";

  net::io_context ioc;
  tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto endpoints = resolver.resolve(host, std::to_string(hostPort->second), tcp::resolver::numeric_service, ec);
  if (ec) return makeError(ErrorCode::kUnavailable, "cannot resolve " + host + ": " + ec.message());

  beast::tcp_stream stream(ioc);
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, listen);
  request.set(http::field::user_agent, "qcs-agent");
  request.keep_alive(false);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 * 1024 * 1024);
  beast::error_code failure;
  const char* stage = "connecting";

  // Async operations, because only they honour the stream's deadline.
  stream.expires_after(timeout);
  stream.async_connect(endpoints, [&](beast::error_code connectEc, const tcp::endpoint&) {
    if (connectEc) {
      failure = connectEc;
      return;
    }
    stage = "sending the request";
    http::async_write(stream, request, [&](beast::error_code writeEc, size_t) {
      if (writeEc) {
        failure = writeEc;
        return;
      }
      stage = "reading the answer";
      http::async_read(stream, buffer, parser, [&](beast::error_code readEc, size_t) { failure = readEc; });
    });
  });
  ioc.run();
  if (failure) {
    std::string what = failure == beast::error::timeout ? "no answer within " + std::to_string(timeout.count()) + "ms"
                                                        : failure.message();
    return makeError(failure == beast::error::timeout ? ErrorCode::kTimeout : ErrorCode::kUnavailable,
                     std::string(stage) + " to " + listen + ": " + what);
  }
  const auto& response = parser.get();
  HttpReply reply;
  reply.status = static_cast<int>(response.result_int());
  reply.contentType = std::string(response[http::field::content_type]);
  reply.body = response.body();
  return reply;
}

// ---- The agent's endpoints ---------------------------------------------------------------------

namespace {

// Multi-line errors (runtime detection lists every candidate) folded onto one line.
std::string oneLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ':')) text.pop_back();
  for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at)) {
    const bool colon = at > 0 && text[at - 1] == ':';
    text.replace(colon ? at - 1 : at, colon ? 2 : 1, "; ");
  }
  return text;
}

}  // namespace

std::string notReadyReason(const SupervisorStatus& status) {
  if (!status.runtimeUp) {
    return "runtime unreachable" + (status.lastError.empty() ? "" : ": " + oneLine(status.lastError));
  }
  if (status.state != SensorState::kRunning) {
    return std::string("sensor ") + sensorStateName(status.state) +
           (status.lastError.empty() ? "" : ": " + oneLine(status.lastError));
  }
  return "";
}

std::string statusJson(const SupervisorStatus& s, const platform::PlatformInfo* platform) {
  using nlohmann::json;
  json restarts = json::object();
  for (RestartReason reason : {RestartReason::kExit, RestartReason::kOom, RestartReason::kMissing,
                               RestartReason::kDrift, RestartReason::kUnhealthy, RestartReason::kRuntime}) {
    auto it = s.restarts.find(reason);
    restarts[restartReasonName(reason)] = it == s.restarts.end() ? 0 : it->second;
  }
  auto wallSeconds = [](const std::optional<WallTime>& t) -> json {
    if (!t) return nullptr;
    return std::chrono::duration<double>(t->time_since_epoch()).count();
  };
  json out = {
      {"agent", {{"version", agentVersion()}, {"revision", agentRevision()}}},
      {"runtime",
       {{"kind", s.runtimeKind},
        {"endpoint", s.runtimeEndpoint},
        {"version", s.runtimeVersion},
        {"up", s.runtimeUp},
        {"eventStream",
         {{"connected", s.eventStreamConnected},
          {"losses", s.eventStreamLosses},
          {"lastLoss", s.lastEventStreamLoss}}}}},
      {"sensor",
       {{"state", sensorStateName(s.state)},
        {"containerId", s.containerId},
        {"image", s.image},
        {"imageId", s.imageId},
        {"specHash", s.specHash},
        {"startedAt", wallSeconds(s.sensorStartedAt)},
        {"restarts", restarts},
        {"lastExitCode", s.lastExitCode ? json(*s.lastExitCode) : json(nullptr)},
        {"lastExitOom", s.lastExitOom},
        {"oomKills", s.oomKills},
        {"backoffSeconds", s.backoffSeconds},
        {"cpuSeconds", s.statsContainerId == s.containerId ? json(s.sensorCpuSeconds) : json(nullptr)},
        {"memoryBytes", s.statsContainerId == s.containerId ? json(s.sensorMemoryBytes) : json(nullptr)},
        {"health",
         {{"probes", s.healthProbes},
          {"consecutiveFailures", s.probeFailures},
          {"lastResult", s.lastProbeResult},
          {"lastProbeAt", wallSeconds(s.lastProbeAt)}}}}},
      {"pulls", {{"succeeded", s.pullsSucceeded}, {"failed", s.pullsFailed}, {"lastSeconds", s.lastPullSeconds}}},
      {"reconciles", s.reconciles},
      {"firstReconcileDone", s.firstReconcileDone},
      {"ready", notReadyReason(s).empty()},
      {"lastError", s.lastError},
  };
  if (platform) {
    out["platform"] = {{"cloud", platform->cloud},      {"orchestrator", platform->orchestrator},
                       {"region", platform->region},    {"zone", platform->zone},
                       {"cluster", platform->cluster},  {"evidence", platform->evidence},
                       {"warnings", platform->warnings}};
  }
  return out.dump(2) + "\n";
}

HttpRoutes makeAgentRoutes(std::function<SupervisorStatus()> status, Metrics* metrics, const Clock& clock,
                           AgentEndpointOptions options, std::shared_ptr<SecretRedactor> redactor) {
  HttpRoutes routes;
  const SteadyTime createdAt = clock.now();
  routes["/livez"] = [status, &clock, options, createdAt] {
    // Only the loop's own heartbeat counts: the sensor's health is /readyz's business.
    const auto s = status();
    const SteadyTime last = s.lastHeartbeat.value_or(createdAt);
    const auto age = std::chrono::duration_cast<std::chrono::milliseconds>(clock.now() - last);
    if (age > options.livenessTimeout) {
      return HttpReply{503, "text/plain; charset=utf-8",
                       "supervisor loop stalled: no heartbeat for " + std::to_string(age.count() / 1000) + "s\n"};
    }
    return HttpReply{200, "text/plain; charset=utf-8", "ok\n"};
  };
  routes["/readyz"] = [status, redactor] {
    std::string reason = notReadyReason(status());
    if (reason.empty()) return HttpReply{200, "text/plain; charset=utf-8", "ok\n"};
    if (redactor) redactor->apply(reason);
    return HttpReply{503, "text/plain; charset=utf-8", "not ready: " + reason + "\n"};
  };
  routes["/status"] = [status, redactor, platform = options.platform] {
    std::string body = statusJson(status(), platform ? &*platform : nullptr);
    if (redactor) redactor->apply(body);  // a last line of defence, as for the logs
    return HttpReply{200, "application/json", std::move(body)};
  };
  if (metrics) {
    routes["/metrics"] = [status, metrics] {
      return HttpReply{200, kPrometheusContentType, metrics->render(status())};
    };
  }
  return routes;
}

}  // namespace qcs::agent

// HttpServer: the agent's small HTTP/1.1 server (Boost.Beast) for /metrics, /livez, /readyz and
// /status.
//
// Contract:
// - start() binds and listens before it returns, so a port in use is an error the caller can act on
//   (exit 1) and boundPort() is known at once (listen on port 0 to let the kernel pick one).
// - One io_context on one thread of its own serves every connection asynchronously: a slow or
//   garbage client never holds up another one, nor the supervisor.
// - GET and HEAD only (405 with Allow otherwise), 404 for unknown paths, headers bounded
//   (431 past the limit), malformed requests get 400 and the connection is closed. A request must
//   arrive within readTimeout and a kept-alive connection is closed after idleTimeout.
// - Routes run on the server's thread and must be quick: they read snapshots, never the runtime.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/supervisor.h"
#include "common/clock.h"
#include "common/result.h"
#include "platform/platform_detect.h"

namespace qcs::agent {

class Metrics;
class SecretRedactor;

struct HttpReply {
  int status = 200;
  std::string contentType = "text/plain; charset=utf-8";
  std::string body;
};
using HttpRoute = std::function<HttpReply()>;
using HttpRoutes = std::map<std::string, HttpRoute>;  // by path, without the query string

struct HttpServerOptions {
  std::string listen = "127.0.0.1:9819";         // host:port or [v6]:port; port 0 = any free port
  std::chrono::milliseconds readTimeout{10000};  // the first request must arrive whole within this
  std::chrono::milliseconds idleTimeout{10000};  // a kept-alive connection waits this for the next
  size_t headerLimit = 8 * 1024;                 // bytes of request line + headers
  size_t maxConnections = 128;                   // more are closed at once
};

class HttpServer {
 public:
  // Binds, listens and starts serving on a thread of its own.
  static Result<std::unique_ptr<HttpServer>> start(const HttpServerOptions& options, HttpRoutes routes);
  ~HttpServer();  // stops serving and joins the thread
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  uint16_t boundPort() const;
  // "127.0.0.1:9819" or "[::1]:9819": the address actually bound.
  std::string boundAddress() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" / "[v6]:port" into host (without brackets) and port.
Result<std::pair<std::string, uint16_t>> splitListenAddress(const std::string& listen);

// A GET of http://<listen><target> (0.0.0.0 and [::] mean this host's loopback), bounded by timeout.
// For `qcs-agent status` and the tests.
Result<HttpReply> httpGet(const std::string& listen, const std::string& target, std::chrono::milliseconds timeout);

// ---- The agent's endpoints (SPEC "HTTP endpoints") ------------------------------------------------

inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

struct AgentEndpointOptions {
  // /livez fails when the supervisor loop has not recorded a heartbeat for this long.
  std::chrono::milliseconds livenessTimeout{60000};
  // Where the node runs, shown in /status (detected once at start).
  std::optional<platform::PlatformInfo> platform;
};

// /metrics, /livez, /readyz and /status over the supervisor's status snapshot. metrics may be null
// (then /metrics is absent); redactor may be null.
HttpRoutes makeAgentRoutes(std::function<SupervisorStatus()> status, Metrics* metrics, const Clock& clock,
                           AgentEndpointOptions options, std::shared_ptr<SecretRedactor> redactor);

// The /status document. Holds no secret: SupervisorStatus never does.
// With a platform, the document has a "platform" object too.
std::string statusJson(const SupervisorStatus& status, const platform::PlatformInfo* platform = nullptr);

// Why the agent is not ready, or "" when it is (runtime up and sensor running).
std::string notReadyReason(const SupervisorStatus& status);

}  // namespace qcs::agent

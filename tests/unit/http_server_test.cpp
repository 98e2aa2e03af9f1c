// The HTTP server and the agent's endpoints, over real loopback sockets on port 0.
#include "agent/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "agent/logging.h"
#include "agent/metrics.h"

namespace qcs::agent {
namespace {

using namespace std::chrono_literals;

// A blocking loopback client that can send anything, including garbage and half requests.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  bool send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  // Reads until the peer closes the connection or the deadline passes; closed() tells which.
  std::string readUntilClosed(std::chrono::milliseconds deadline = 5s) {
    std::string out;
    auto end = std::chrono::steady_clock::now() + deadline;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left <= 0ms) return out;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return out;
      char buffer[4096];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) {
        closed_ = true;
        return out;
      }
      out.append(buffer, static_cast<size_t>(n));
    }
  }
  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
};

std::string request(const std::string& method, const std::string& path) {
  return method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
}

int statusCode(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return -1;
  return std::stoi(response.substr(9, 3));
}

std::string header(const std::string& response, const std::string& name) {
  auto end = response.find("\r\n\r\n");
  std::string head = response.substr(0, end);
  std::string lowered;
  for (char c : head) lowered += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string key = "\r\n" + name + ": ";
  for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto at = lowered.find(key);
  if (at == std::string::npos) return "";
  auto valueStart = at + key.size();
  return head.substr(valueStart, head.find("\r\n", valueStart) - valueStart);
}

std::string body(const std::string& response) {
  auto end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() {
    status.runtimeKind = "docker";
    status.runtimeEndpoint = "/var/run/docker.sock";
    status.runtimeVersion = "24.0.5";
    status.runtimeUp = true;
    status.eventStreamLosses = 3;
    status.lastEventStreamLoss = "unexpected EOF";
    status.state = SensorState::kRunning;
    status.containerId = "abcdef0123456789";
    status.image = "qualys/qcs-sensor:latest";
    status.imageId = "sha256:1234";
    status.specHash = "feedbeef";
    status.restarts[RestartReason::kOom] = 2;
    status.lastExitCode = 137;
    status.healthProbes = true;
    status.probeFailures = 1;
    status.lastProbeResult = "exec probe exited with code 1";
    status.lastHeartbeat = clock.now();
  }

  HttpServer& server() {
    if (!server_) {
      HttpServerOptions options;
      options.listen = "127.0.0.1:0";
      auto started = HttpServer::start(
          options, makeAgentRoutes([this] { return snapshot(); }, &metrics, clock, endpointOptions, nullptr));
      EXPECT_TRUE(started.ok()) << (started.ok() ? "" : started.message());
      server_ = std::move(started.value());
    }
    return *server_;
  }
  std::string exchange(const std::string& bytes) {
    RawClient client(server().boundPort());
    EXPECT_TRUE(client.connected());
    client.send(bytes);
    return client.readUntilClosed();
  }
  SupervisorStatus snapshot() {
    std::lock_guard lock(mu);
    return status;
  }

  std::mutex mu;
  SupervisorStatus status;
  FakeClock clock;
  Metrics metrics{"1.2.3", "abc"};
  AgentEndpointOptions endpointOptions;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, PortZeroReportsTheBoundPort) {
  EXPECT_NE(server().boundPort(), 0);
  EXPECT_EQ(server().boundAddress(), "127.0.0.1:" + std::to_string(server().boundPort()));
}

TEST_F(HttpServerTest, LivezIs200WhileTheLoopBeats) {
  auto response = exchange(request("GET", "/livez"));
  EXPECT_EQ(statusCode(response), 200);
  EXPECT_EQ(header(response, "Content-Type"), "text/plain; charset=utf-8");
}

TEST_F(HttpServerTest, LivezIs503WhenTheHeartbeatIsStaleWhateverTheSensorDoes) {
  clock.advance(endpointOptions.livenessTimeout + 1s);
  auto response = exchange(request("GET", "/livez"));
  EXPECT_EQ(statusCode(response), 503);
  EXPECT_NE(body(response).find("stalled"), std::string::npos);

  // A fresh heartbeat with a broken sensor and runtime is still alive.
  {
    std::lock_guard lock(mu);
    status.lastHeartbeat = clock.now();
    status.runtimeUp = false;
    status.state = SensorState::kRuntimeDown;
  }
  EXPECT_EQ(statusCode(exchange(request("GET", "/livez"))), 200);
}

TEST_F(HttpServerTest, ReadyzIs200WhenRuntimeUpAndSensorRunning) {
  auto response = exchange(request("GET", "/readyz"));
  EXPECT_EQ(statusCode(response), 200);
  EXPECT_EQ(body(response), "ok\n");
}

TEST_F(HttpServerTest, ReadyzIs503WithAOneLineReason) {
  {
    std::lock_guard lock(mu);
    status.state = SensorState::kBackoff;
    status.lastError = "sensor exited with code 1\nsecond line";
  }
  auto response = exchange(request("GET", "/readyz"));
  EXPECT_EQ(statusCode(response), 503);
  EXPECT_EQ(body(response), "not ready: sensor backoff: sensor exited with code 1; second line\n");

  {
    std::lock_guard lock(mu);
    status.runtimeUp = false;
    status.state = SensorState::kRuntimeDown;
    status.lastError = "runtime unavailable: no runtime answered:\ndocker /x.sock: absent";
  }
  response = exchange(request("GET", "/readyz"));
  EXPECT_EQ(statusCode(response), 503);
  EXPECT_EQ(body(response),
            "not ready: runtime unreachable: runtime unavailable: no runtime answered; docker /x.sock: absent\n");
}

TEST_F(HttpServerTest, StatusIsJsonWithTheSupervisorsView) {
  auto response = exchange(request("GET", "/status"));
  EXPECT_EQ(statusCode(response), 200);
  EXPECT_EQ(header(response, "Content-Type"), "application/json");
  auto doc = nlohmann::json::parse(body(response));
  EXPECT_EQ(doc["runtime"]["kind"], "docker");
  EXPECT_EQ(doc["runtime"]["endpoint"], "/var/run/docker.sock");
  EXPECT_EQ(doc["runtime"]["version"], "24.0.5");
  EXPECT_EQ(doc["runtime"]["up"], true);
  EXPECT_EQ(doc["runtime"]["eventStream"]["connected"], false);
  EXPECT_EQ(doc["runtime"]["eventStream"]["losses"], 3);
  EXPECT_EQ(doc["runtime"]["eventStream"]["lastLoss"], "unexpected EOF");
  EXPECT_EQ(doc["sensor"]["containerId"], "abcdef0123456789");
  EXPECT_EQ(doc["sensor"]["state"], "running");
  EXPECT_EQ(doc["sensor"]["imageId"], "sha256:1234");
  EXPECT_EQ(doc["sensor"]["specHash"], "feedbeef");
  EXPECT_EQ(doc["sensor"]["lastExitCode"], 137);
  EXPECT_EQ(doc["sensor"]["restarts"]["oom"], 2);
  EXPECT_EQ(doc["sensor"]["restarts"]["exit"], 0);
  EXPECT_EQ(doc["sensor"]["restarts"]["unhealthy"], 0);
  EXPECT_EQ(doc["sensor"]["health"]["probes"], true);
  EXPECT_EQ(doc["sensor"]["health"]["consecutiveFailures"], 1);
  EXPECT_EQ(doc["sensor"]["health"]["lastResult"], "exec probe exited with code 1");
  EXPECT_TRUE(doc["sensor"]["health"]["lastProbeAt"].is_null());
  EXPECT_EQ(doc["ready"], true);
}

TEST_F(HttpServerTest, StatusRedactsRegisteredSecrets) {
  auto redactor = std::make_shared<SecretRedactor>();
  redactor->add("11111111-2222-3333-4444-555555555555");
  status.lastError = "peer said 11111111-2222-3333-4444-555555555555";
  auto routes = makeAgentRoutes([this] { return snapshot(); }, nullptr, clock, endpointOptions, redactor);
  auto reply = routes.at("/status")();
  EXPECT_EQ(reply.body.find("11111111-2222"), std::string::npos);
  EXPECT_EQ(routes.count("/metrics"), 0u) << "no metrics object, no /metrics";
}

TEST_F(HttpServerTest, StatusShowsThePlatformWhenOneWasDetected) {
  auto plain = makeAgentRoutes([this] { return snapshot(); }, nullptr, clock, endpointOptions, nullptr);
  EXPECT_FALSE(nlohmann::json::parse(plain.at("/status")().body).contains("platform"));
  platform::PlatformInfo node;
  node.cloud = "aws";
  node.orchestrator = "ecs";
  node.region = "eu-west-1";
  node.zone = "eu-west-1b";
  node.cluster = "prod";
  node.evidence = {"dmi sys_vendor=Amazon EC2", "file /etc/ecs/ecs.config"};
  node.warnings = {"aws: something"};
  AgentEndpointOptions options = endpointOptions;
  options.platform = node;
  auto routes = makeAgentRoutes([this] { return snapshot(); }, nullptr, clock, options, nullptr);
  auto doc = nlohmann::json::parse(routes.at("/status")().body);
  EXPECT_EQ(doc["platform"]["cloud"], "aws");
  EXPECT_EQ(doc["platform"]["orchestrator"], "ecs");
  EXPECT_EQ(doc["platform"]["region"], "eu-west-1");
  EXPECT_EQ(doc["platform"]["zone"], "eu-west-1b");
  EXPECT_EQ(doc["platform"]["cluster"], "prod");
  EXPECT_EQ(doc["platform"]["evidence"].size(), 2u);
  EXPECT_EQ(doc["platform"]["warnings"][0], "aws: something");
}

TEST_F(HttpServerTest, MetricsUsesThePrometheusTextContentType) {
  auto response = exchange(request("GET", "/metrics"));
  EXPECT_EQ(statusCode(response), 200);
  EXPECT_EQ(header(response, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(body(response).find("qcs_sensor_up 1"), std::string::npos);
}

TEST_F(HttpServerTest, HeadHasHeadersButNoBody) {
  auto get = exchange(request("GET", "/status"));
  auto head = exchange(request("HEAD", "/status"));
  EXPECT_EQ(statusCode(head), 200);
  EXPECT_EQ(header(head, "Content-Type"), "application/json");
  EXPECT_EQ(header(head, "Content-Length"), header(get, "Content-Length"));
  EXPECT_EQ(body(head), "");
}

TEST_F(HttpServerTest, OtherMethodsGet405WithAllow) {
  auto response = exchange("POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
  EXPECT_EQ(statusCode(response), 405);
  EXPECT_EQ(header(response, "Allow"), "GET, HEAD");
  EXPECT_EQ(statusCode(exchange(request("DELETE", "/metrics"))), 405);
}

TEST_F(HttpServerTest, UnknownPathIs404AndQueryStringsAreIgnored) {
  EXPECT_EQ(statusCode(exchange(request("GET", "/nope"))), 404);
  EXPECT_EQ(statusCode(exchange(request("GET", "/livez?verbose=1"))), 200);
}

TEST_F(HttpServerTest, OversizedHeaderIsRefused) {
  std::string huge = "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(16 * 1024, 'a') + "\r\n\r\n";
  RawClient client(server().boundPort());
  client.send(huge);
  auto response = client.readUntilClosed();
  EXPECT_EQ(statusCode(response), 431);
  EXPECT_TRUE(client.closed());
}

TEST_F(HttpServerTest, GarbageGets400AndTheConnectionCloses) {
  RawClient client(server().boundPort());
  client.send("\x01\x02 this is not http\r\n\r\n");
  auto response = client.readUntilClosed();
  EXPECT_EQ(statusCode(response), 400);
  EXPECT_TRUE(client.closed());
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  RawClient client(server().boundPort());
  client.send("GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  auto both = client.readUntilClosed();
  EXPECT_EQ(statusCode(both), 200);
  EXPECT_NE(both.find("HTTP/1.1 200", 10), std::string::npos) << both;
  EXPECT_TRUE(client.closed());
}

TEST_F(HttpServerTest, ASlowClientDoesNotBlockAnother) {
  RawClient slow(server().boundPort());
  ASSERT_TRUE(slow.connected());
  slow.send("GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ");  // and never finishes
  auto start = std::chrono::steady_clock::now();
  auto reply = httpGet(server().boundAddress(), "/livez", 3s);
  ASSERT_TRUE(reply.ok()) << reply.message();
  EXPECT_EQ(reply->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST_F(HttpServerTest, AClientThatSendsNothingIsDisconnectedAfterTheReadTimeout) {
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.readTimeout = 200ms;
  auto started =
      HttpServer::start(options, makeAgentRoutes([this] { return snapshot(); }, nullptr, clock, {}, nullptr));
  ASSERT_TRUE(started.ok());
  RawClient idle(started.value()->boundPort());
  idle.readUntilClosed(5s);
  EXPECT_TRUE(idle.closed());
}

TEST_F(HttpServerTest, APortInUseIsAClearError) {
  HttpServerOptions options;
  options.listen = server().boundAddress();
  auto second = HttpServer::start(options, {});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.message().find("http.listen"), std::string::npos) << second.message();
  EXPECT_NE(second.message().find("in use"), std::string::npos) << second.message();
}

TEST_F(HttpServerTest, ListensOnIpv6Loopback) {
  HttpServerOptions options;
  options.listen = "[::1]:0";
  auto started =
      HttpServer::start(options, makeAgentRoutes([this] { return snapshot(); }, nullptr, clock, {}, nullptr));
  if (!started.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << started.message();
  auto reply = httpGet(started.value()->boundAddress(), "/livez", 3s);
  ASSERT_TRUE(reply.ok()) << reply.message();
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(started.value()->boundAddress().rfind("[::1]:", 0), 0u);
}

TEST(HttpGet, NothingListeningIsAnError) {
  // Bind and close a server to find a port that nothing listens on.
  uint16_t port = 0;
  {
    HttpServerOptions options;
    options.listen = "127.0.0.1:0";
    auto started = HttpServer::start(options, {});
    ASSERT_TRUE(started.ok());
    port = started.value()->boundPort();
  }
  auto reply = httpGet("127.0.0.1:" + std::to_string(port), "/status", 2s);
  EXPECT_FALSE(reply.ok());
}

TEST(SplitListenAddress, AcceptsV4V6AndNames) {
  EXPECT_EQ(splitListenAddress("127.0.0.1:9819")->first, "127.0.0.1");
  EXPECT_EQ(splitListenAddress("127.0.0.1:9819")->second, 9819);
  EXPECT_EQ(splitListenAddress("[::1]:0")->first, "::1");
  EXPECT_EQ(splitListenAddress("localhost:80")->first, "localhost");
  EXPECT_FALSE(splitListenAddress("127.0.0.1").ok());
  EXPECT_FALSE(splitListenAddress("127.0.0.1:99999").ok());
}

}  // namespace
}  // namespace qcs::agent

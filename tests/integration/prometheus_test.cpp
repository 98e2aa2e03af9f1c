// A real Prometheus scrapes the qcs-agent binary supervising the stand-in sensor on a private
// dockerd; promtool checks the exposition; `qcs-agent status` reads the running agent; a port in
// use makes the agent exit 1.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "agent/http_server.h"
#include "harness/agent_process.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kActivationId = kE2eActivationId;
constexpr const char* kCustomerId = kE2eCustomerId;
constexpr const char* kSensorName = "qcs-prom-sensor";
constexpr const char* kPrometheus = "/usr/bin/prometheus";
constexpr const char* kPromtool = "/usr/bin/promtool";

// A loopback TCP port nothing listens on right now.
int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t length = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

class PrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kPrometheus, X_OK) != 0 || ::access(kPromtool, X_OK) != 0) {
      GTEST_SKIP() << "prometheus is not installed (apt-get install prometheus; see scripts/setup.sh)";
    }
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    auto image = buildStandinImage(*dockerd_);
    ASSERT_TRUE(image.ok()) << image.message();
    ASSERT_TRUE(writeFile(dir_.file("customer-id"), std::string(kCustomerId) + "\n", 0600));
  }
  void TearDown() override {
    prometheus_.reset();
    agent_.reset();
    dockerd_.reset();
  }

  std::string config(const std::string& listen = "127.0.0.1:0") {
    std::ostringstream c;
    c << "runtime:\n  kind: docker\n  endpoint: " << dockerd_->socketPath() << "\n"
      << "sensor:\n  image: qcs-standin:test\n  pull_policy: never\n  name: " << kSensorName << "\n"
      << "  env: {STANDIN_LOG_INTERVAL: \"1\"}\n"
      << "secrets:\n  activation_id: {source: env, name: QCS_E2E_ACTIVATION_ID}\n"
      << "  customer_id: {source: file, path: " << dir_.file("customer-id") << "}\n"
      << "supervision:\n  backoff: {initial: 300ms, max: 3s, multiplier: 2, jitter: 0, reset_after: 1m}\n"
      << "  reconcile_interval: 5s\n"
      << "platform: {detect: none}\n"  // no metadata service outside loopback, even on a cloud VM
      << "logging: {level: debug, format: json}\n"
      << "http: {listen: \"" << listen << "\"}\n";
    return c.str();
  }

  std::unique_ptr<Process> startAgent(const std::string& yaml, const std::string& name) {
    std::string path = dir_.file(name + ".yaml");
    EXPECT_TRUE(writeFile(path, yaml, 0600));
    auto p = Process::spawn({QCS_AGENT_BINARY, "run", "--config", path},
                            {{"QCS_E2E_ACTIVATION_ID", kActivationId}, {"DOCKER_HOST", ""}}, dir_.file(name + ".log"));
    EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.message());
    return p.ok() ? std::move(p.value()) : nullptr;
  }

  // The port from the agent's "agent.http: listening on 127.0.0.1:PORT" log line; 0 until logged.
  static int agentPort(Process& agent) {
    static const std::regex line(R"(agent\.http: listening on 127\.0\.0\.1:([0-9]+))");
    std::smatch match;
    const std::string log = agent.output();
    return std::regex_search(log, match, line) ? std::stoi(match[1]) : 0;
  }

  // One instant-vector query; the first sample's value, or nullopt while there is none.
  std::optional<double> query(const std::string& encodedQuery) {
    auto reply = agent::httpGet(prometheusAddress_, "/api/v1/query?query=" + encodedQuery, 5s);
    if (!reply.ok() || reply->status != 200) return std::nullopt;
    auto doc = json::parse(reply->body, nullptr, false);
    if (!doc.is_object() || doc.value("status", "") != "success") return std::nullopt;
    const auto& result = doc["data"]["result"];
    if (!result.is_array() || result.empty()) return std::nullopt;
    return std::stod(result[0]["value"][1].get<std::string>());
  }

  bool startPrometheus(int agentPort) {
    const int port = freePort();
    prometheusAddress_ = "127.0.0.1:" + std::to_string(port);
    const std::string configPath = dir_.file("prometheus.yml");
    std::ostringstream c;
    c << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
      << "scrape_configs:\n  - job_name: qcs-agent\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << agentPort << "']\n";
    if (!writeFile(configPath, c.str())) return false;
    ::mkdir(dir_.file("tsdb").c_str(), 0755);
    auto p = Process::spawn({kPrometheus, "--config.file=" + configPath, "--storage.tsdb.path=" + dir_.file("tsdb"),
                             "--web.listen-address=" + prometheusAddress_, "--log.level=warn"},
                            {}, dir_.file("prometheus.log"));
    if (!p.ok()) return false;
    prometheus_ = std::move(p.value());
    return waitFor(
        [&] {
          auto ready = agent::httpGet(prometheusAddress_, "/-/ready", 2s);
          return ready.ok() && ready->status == 200;
        },
        60s);
  }

  TempDir dir_;
  std::unique_ptr<Dockerd> dockerd_;
  std::unique_ptr<Process> agent_;
  std::unique_ptr<Process> prometheus_;
  std::string prometheusAddress_;
};

TEST_F(PrometheusTest, ScrapesTheAgentAndSeesRestartsRise) {
  agent_ = startAgent(config(), "agent");
  ASSERT_NE(agent_, nullptr);
  int port = 0;
  ASSERT_TRUE(waitFor([&] { return (port = agentPort(*agent_)) != 0; }, 30s)) << agent_->output();
  const std::string agentAddress = "127.0.0.1:" + std::to_string(port);

  // The exposition passes promtool's checks once the sensor runs.
  std::string body;
  ASSERT_TRUE(waitFor(
      [&] {
        auto reply = agent::httpGet(agentAddress, "/metrics", 2s);
        if (!reply.ok()) return false;
        body = reply->body;
        return body.find("\nqcs_sensor_up 1") != std::string::npos;
      },
      60s))
      << body << agent_->output();
  auto lint = runCommand({kPromtool, "check", "metrics"}, body, 30s);
  ASSERT_TRUE(lint.ok()) << lint.message();
  EXPECT_EQ(lint->exitCode, 0) << lint->out << lint->err;

  ASSERT_TRUE(startPrometheus(port)) << (prometheus_ ? prometheus_->output() : "prometheus did not start");
  ASSERT_TRUE(waitFor([&] { return query("qcs_sensor_up") == 1.0; }, 60s)) << prometheus_->output() << agent_->output();
  auto before = query("sum%28qcs_sensor_restarts_total%29");
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(query("qcs_sensor_state%7Bstate%3D%22running%22%7D"), 1.0);

  {
    auto killed = dockerd_->killContainer(kSensorName);
    ASSERT_TRUE(killed.ok()) << killed.message();
  }
  EXPECT_TRUE(waitFor(
      [&] {
        auto now = query("sum%28qcs_sensor_restarts_total%29");
        return now && *now > *before;
      },
      60s))
      << agent_->output();
  EXPECT_TRUE(waitFor([&] { return query("qcs_sensor_restarts_total%7Breason%3D%22exit%22%7D") >= 1.0; }, 30s));
  EXPECT_TRUE(waitFor([&] { return query("qcs_sensor_up") == 1.0; }, 60s)) << "the sensor runs again";
  EXPECT_EQ(query("up%7Bjob%3D%22qcs-agent%22%7D"), 1.0) << "every scrape succeeded";
}

TEST_F(PrometheusTest, StatusCommandReadsTheRunningAgent) {
  agent_ = startAgent(config(), "agent");
  ASSERT_NE(agent_, nullptr);
  int port = 0;
  ASSERT_TRUE(waitFor([&] { return (port = agentPort(*agent_)) != 0; }, 30s)) << agent_->output();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(waitFor(
      [&] {
        auto ready = agent::httpGet(address, "/readyz", 2s);
        return ready.ok() && ready->status == 200;
      },
      60s))
      << agent_->output();

  // Ready needs no event stream (reconcile alone supervises), so wait for it to say it is connected.
  ASSERT_TRUE(waitFor(
      [&] {
        auto document = agent::httpGet(address, "/status", 5s);
        auto doc = document.ok() ? json::parse(document->body, nullptr, false) : json();
        return doc.is_object() && doc["runtime"]["eventStream"].value("connected", false);
      },
      30s));
  auto status = runCommand({QCS_AGENT_BINARY, "status", "--listen", address}, "", 30s);
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(status->exitCode, 0) << status->err;
  EXPECT_NE(status->out.find(": ready"), std::string::npos) << status->out;
  EXPECT_NE(status->out.find("running"), std::string::npos) << status->out;
  EXPECT_NE(status->out.find("docker"), std::string::npos) << status->out;
  EXPECT_NE(status->out.find("events:     connected, lost 0 times"), std::string::npos) << status->out;
  EXPECT_EQ(status->out.find(kActivationId), std::string::npos) << "no secret in the status";
  // The real daemon's resource sample arrives as soon as the sensor runs.
  std::string last;
  EXPECT_TRUE(waitFor(
      [&] {
        auto document = agent::httpGet(address, "/status", 5s);
        if (!document.ok()) return false;
        last = document->body;
        auto doc = json::parse(last, nullptr, false);
        if (!doc.is_object() || !doc["sensor"]["memoryBytes"].is_number()) return false;
        return doc["sensor"]["memoryBytes"].get<double>() > 0 && doc["sensor"]["cpuSeconds"].get<double>() >= 0;
      },
      30s))
      << last;

  agent_->kill(SIGTERM);
  ASSERT_EQ(agent_->wait(30s), 0);
  auto gone = runCommand({QCS_AGENT_BINARY, "status", "--listen", address}, "", 30s);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->exitCode, 1);
  EXPECT_NE(gone->err.find("no agent answered"), std::string::npos) << gone->err;
}

TEST_F(PrometheusTest, APortInUseExits1WithAClearMessage) {
  agent_ = startAgent(config(), "agent");
  ASSERT_NE(agent_, nullptr);
  int port = 0;
  ASSERT_TRUE(waitFor([&] { return (port = agentPort(*agent_)) != 0; }, 30s)) << agent_->output();

  auto second = startAgent(config("127.0.0.1:" + std::to_string(port)), "second");
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->wait(30s), 1) << "a bind failure is not a configuration error (78)\n" << second->output();
  EXPECT_NE(second->output().find("cannot listen"), std::string::npos) << second->output();
}

}  // namespace
}  // namespace qcs::testing
